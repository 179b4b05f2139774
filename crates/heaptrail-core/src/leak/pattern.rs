//! The leak pattern of a holder, and the one-line fix a person can apply.
//!
//! The pattern is read from facts the heap analysis observed, never guessed from file or
//! variable names alone: the kind of edges on the path (an `lru_cache` wrapper's cache, a
//! `threading.local`, `gc.garbage`, `logging`'s manager), the holder's type, and what its
//! elements are (exceptions, callables, asyncio tasks — resolved to real classes by the
//! caller, see [`ElementKinds`]). When no rule matches, the pattern is `unknown` and no hint is
//! given.

use super::analysis::Holder;
use super::holder_text::is_class_type;
use serde::Serialize;

/// What a sample of the holder's elements are, resolved by the caller against the live
/// classes (`issubclass(t, BaseException)`, `callable`, `asyncio.Future`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElementKinds {
    pub total: u64,
    pub exceptions: u64,
    pub callables: u64,
    pub tasks: u64,
}

impl ElementKinds {
    fn majority(&self, n: u64) -> bool {
        self.total > 0 && n * 2 > self.total
    }
}

/// A leak pattern. Names are part of the report schema (`leaks[].pattern`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeakPattern {
    UnboundedCache,
    UnboundedList,
    ListenerNeverRemoved,
    ThreadLocalAccumulation,
    StoredExceptions,
    LruCacheUnbounded,
    LruCacheOnMethod,
    PerRequestLogger,
    TaskSet,
    UncollectableCycle,
    MetricLabelCardinality,
    /// Not a leak: growth held by a container with a size bound (`functools.lru_cache(maxsize=N)`,
    /// `deque(maxlen=N)`, a cache object with a `maxsize` attribute such as cachetools'
    /// caches) that is still filling up. The watcher does not report it as a leak.
    BoundedCache,
    Unknown,
}

impl LeakPattern {
    pub const ALL: [LeakPattern; 13] = [
        LeakPattern::UnboundedCache,
        LeakPattern::UnboundedList,
        LeakPattern::ListenerNeverRemoved,
        LeakPattern::ThreadLocalAccumulation,
        LeakPattern::StoredExceptions,
        LeakPattern::LruCacheUnbounded,
        LeakPattern::LruCacheOnMethod,
        LeakPattern::PerRequestLogger,
        LeakPattern::TaskSet,
        LeakPattern::UncollectableCycle,
        LeakPattern::MetricLabelCardinality,
        LeakPattern::BoundedCache,
        LeakPattern::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeakPattern::UnboundedCache => "unbounded-cache",
            LeakPattern::UnboundedList => "unbounded-list",
            LeakPattern::ListenerNeverRemoved => "listener-never-removed",
            LeakPattern::ThreadLocalAccumulation => "thread-local-accumulation",
            LeakPattern::StoredExceptions => "stored-exceptions",
            LeakPattern::LruCacheUnbounded => "lru-cache-unbounded",
            LeakPattern::LruCacheOnMethod => "lru-cache-on-method",
            LeakPattern::PerRequestLogger => "per-request-logger",
            LeakPattern::TaskSet => "task-set",
            LeakPattern::UncollectableCycle => "uncollectable-cycle",
            LeakPattern::MetricLabelCardinality => "metric-label-cardinality",
            LeakPattern::BoundedCache => "bounded-cache",
            LeakPattern::Unknown => "unknown",
        }
    }

    /// The fix, in one line; empty for `Unknown`.
    pub fn hint(self) -> &'static str {
        match self {
            LeakPattern::UnboundedCache => "unbounded cache: give it a maxsize or an expiry (functools.lru_cache(maxsize=...), cachetools.TTLCache), or delete entries when they are done",
            LeakPattern::UnboundedList => "collection that only grows: bound it (collections.deque(maxlen=...)) or drain it once its items are handled",
            LeakPattern::ListenerNeverRemoved => "listener never removed: unsubscribe when the subscriber is done, or hold listeners weakly (weakref.WeakMethod, weakref.WeakSet)",
            LeakPattern::ThreadLocalAccumulation => "thread-local accumulation: pool threads live forever; reset the threading.local state at the end of each task",
            LeakPattern::StoredExceptions => "stored exceptions pin their tracebacks' frames and locals: keep traceback.format_exception(exc) text, or drop the traceback (exc.with_traceback(None))",
            LeakPattern::LruCacheUnbounded => "lru_cache without a bound: use functools.lru_cache(maxsize=N) (maxsize=None never evicts)",
            LeakPattern::LruCacheOnMethod => "lru_cache on a method keeps every instance alive through `self`: cache a module-level function of the real key, or per instance (functools.cached_property)",
            LeakPattern::PerRequestLogger => "per-request logger names: logging keeps every logger forever; use one logger and pass the id in `extra=` or a logging.LoggerAdapter",
            LeakPattern::TaskSet => "background tasks kept after they finish: add task.add_done_callback(tasks.discard) where the task is added",
            LeakPattern::UncollectableCycle => "uncollectable cycles in gc.garbage: break the cycle (weakref) and clear gc.garbage; gc.DEBUG_SAVEALL keeps every collected cycle",
            LeakPattern::MetricLabelCardinality => "unbounded metric label values: label with a bounded set (route, status), put ids in logs or traces instead",
            LeakPattern::BoundedCache => "not a leak: a container with a size bound (lru_cache maxsize, deque maxlen, a cache's maxsize attribute) still filling up; it stops growing at its bound (lower the bound if that is more memory than you can spare)",
            LeakPattern::Unknown => "",
        }
    }
}

impl std::fmt::Display for LeakPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names used by metric libraries for their label-keyed children (`prometheus_client`'s
/// `_metrics`, hand-written `counters`/`labels` registries).
fn looks_like_metric(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["metric", "counter", "gauge", "histogram", "summary", "label"]
        .iter()
        .any(|w| lower.contains(w))
}

/// The pattern of a leak held by `holder` whose elements are `kinds`.
pub fn classify(holder: &Holder, kinds: &ElementKinds) -> LeakPattern {
    let path = &holder.path;
    if path.first().is_some_and(|e| e.kind == "gc_garbage") {
        return LeakPattern::UncollectableCycle;
    }
    if holder.bound.is_some() || path.iter().any(|e| e.kind == "bounded_lru_cache") {
        return LeakPattern::BoundedCache;
    }
    if let Some(i) = path.iter().position(|e| e.kind == "lru_cache") {
        // The wrapper is reached as an attribute of a class: a decorated method, whose cache
        // keys hold `self`.
        let on_method = i >= 2
            && path[i - 1].kind == "attr"
            && is_class_type(&path[i - 2].type_name);
        return if on_method {
            LeakPattern::LruCacheOnMethod
        } else {
            LeakPattern::LruCacheUnbounded
        };
    }
    // Through one thread's attributes, or — when the growth is spread over several threads —
    // at the `threading.local` object itself (C `_thread._local` or the pure-Python one).
    let thread_local_type = |t: &str| t == "_thread._local" || t == "_threading_local.local";
    if path.iter().any(|e| e.kind == "thread_local") || thread_local_type(&holder.type_name) {
        return LeakPattern::ThreadLocalAccumulation;
    }
    if path.iter().any(|e| e.type_name == "logging.Manager")
        && holder.type_name == "builtins.dict"
    {
        return LeakPattern::PerRequestLogger;
    }
    if kinds.majority(kinds.exceptions) {
        return LeakPattern::StoredExceptions;
    }
    if kinds.majority(kinds.tasks) {
        return LeakPattern::TaskSet;
    }
    if kinds.majority(kinds.callables) {
        return LeakPattern::ListenerNeverRemoved;
    }
    let tuple_keys = holder.key_types.as_ref().is_some_and(|keys| {
        let total: u64 = keys.values().sum();
        total > 0 && keys.get("builtins.tuple").copied().unwrap_or(0) * 2 > total
    });
    let named_like_metrics = path
        .iter()
        .any(|e| looks_like_metric(&e.name) || looks_like_metric(&e.type_name));
    let mapping = matches!(
        holder.type_name.as_str(),
        "builtins.dict" | "builtins.set" | "builtins.frozenset" | "collections.OrderedDict"
            | "collections.defaultdict" | "weakref.WeakValueDictionary"
    );
    if mapping && named_like_metrics && (tuple_keys || holder.type_name == "builtins.dict") {
        return LeakPattern::MetricLabelCardinality;
    }
    if mapping {
        return LeakPattern::UnboundedCache;
    }
    if matches!(holder.type_name.as_str(), "builtins.list" | "collections.deque") {
        return LeakPattern::UnboundedList;
    }
    LeakPattern::Unknown
}

#[cfg(test)]
mod tests {
    use super::super::analysis::{Edge, Role};
    use super::*;
    use std::collections::BTreeMap;

    fn e(kind: &str, name: &str, type_name: &str) -> Edge {
        Edge {
            kind: kind.into(),
            name: name.into(),
            of: None,
            type_name: type_name.into(),
        }
    }

    fn holder(type_name: &str, path: Vec<Edge>) -> Holder {
        Holder {
            type_name: type_name.into(),
            len: None,
            share: 1.0,
            role: Role::Element,
            path,
            element_types: BTreeMap::new(),
            key_types: None,
            element_sites: Vec::new(),
            bound: None,
            siblings: None,
        }
    }

    fn module(name: &str) -> Edge {
        e("module", name, "builtins.module")
    }

    #[test]
    fn caches_lists_and_unknown() {
        let h = holder("builtins.dict", vec![module("app"), e("attr", "_S", "builtins.dict")]);
        assert_eq!(classify(&h, &ElementKinds::default()), LeakPattern::UnboundedCache);
        let h = holder("builtins.list", vec![module("app"), e("attr", "seen", "builtins.list")]);
        assert_eq!(classify(&h, &ElementKinds::default()), LeakPattern::UnboundedList);
        let h = holder("app.Node", vec![module("app"), e("attr", "root", "app.Node")]);
        assert_eq!(classify(&h, &ElementKinds::default()), LeakPattern::Unknown);
        assert_eq!(LeakPattern::Unknown.hint(), "");
    }

    #[test]
    fn lru_cache_function_vs_method() {
        let f = holder(
            "builtins.dict",
            vec![
                module("app"),
                e("attr", "lookup", "functools._lru_cache_wrapper"),
                e("lru_cache", "cache", "builtins.dict"),
            ],
        );
        assert_eq!(classify(&f, &ElementKinds::default()), LeakPattern::LruCacheUnbounded);
        let m = holder(
            "builtins.dict",
            vec![
                module("app"),
                e("attr", "Service", "builtins.type"),
                e("attr", "lookup", "functools._lru_cache_wrapper"),
                e("lru_cache", "cache", "builtins.dict"),
            ],
        );
        assert_eq!(classify(&m, &ElementKinds::default()), LeakPattern::LruCacheOnMethod);
        let bounded = holder(
            "builtins.dict",
            vec![
                module("app"),
                e("attr", "lookup", "functools._lru_cache_wrapper"),
                e("bounded_lru_cache", "maxsize=1000", "builtins.dict"),
            ],
        );
        assert_eq!(classify(&bounded, &ElementKinds::default()), LeakPattern::BoundedCache);
        // A bounded lru_cache is usually reached through its own linked list: the wrapper
        // itself is the holder, and its bound says it.
        let mut wrapper = holder(
            "functools._lru_cache_wrapper",
            vec![module("app"), e("attr", "lookup", "functools._lru_cache_wrapper")],
        );
        assert_eq!(classify(&wrapper, &ElementKinds::default()), LeakPattern::Unknown);
        wrapper.bound = Some(4000);
        assert_eq!(classify(&wrapper, &ElementKinds::default()), LeakPattern::BoundedCache);
    }

    #[test]
    fn element_kinds_decide_listeners_tasks_exceptions() {
        let h = holder("builtins.list", vec![module("app"), e("attr", "bus", "app.Bus"),
                                             e("attr", "listeners", "builtins.list")]);
        let k = |exceptions, callables, tasks| ElementKinds { total: 10, exceptions, callables, tasks };
        assert_eq!(classify(&h, &k(0, 10, 0)), LeakPattern::ListenerNeverRemoved);
        assert_eq!(classify(&h, &k(0, 0, 9)), LeakPattern::TaskSet);
        assert_eq!(classify(&h, &k(8, 0, 0)), LeakPattern::StoredExceptions);
        assert_eq!(classify(&h, &k(5, 0, 0)), LeakPattern::UnboundedList); // not a majority
    }

    #[test]
    fn registries_of_libraries() {
        let logging = holder(
            "builtins.dict",
            vec![
                module("logging"),
                e("attr", "root", "logging.RootLogger"),
                e("attr", "manager", "logging.Manager"),
                e("attr", "loggerDict", "builtins.dict"),
            ],
        );
        assert_eq!(classify(&logging, &ElementKinds::default()), LeakPattern::PerRequestLogger);
        let mut metrics = holder(
            "builtins.dict",
            vec![
                module("app"),
                e("attr", "REQUESTS", "prometheus_client.metrics.Counter"),
                e("attr", "_metrics", "builtins.dict"),
            ],
        );
        metrics.key_types = Some(BTreeMap::from([("builtins.tuple".to_string(), 20)]));
        assert_eq!(classify(&metrics, &ElementKinds::default()), LeakPattern::MetricLabelCardinality);
        let tl = holder("builtins.list", vec![module("app"), e("attr", "state", "_thread._local"),
                                              e("thread_local", "", "builtins.dict"),
                                              e("key", "'seen'", "builtins.list")]);
        assert_eq!(classify(&tl, &ElementKinds::default()), LeakPattern::ThreadLocalAccumulation);
        // Spread over several threads: the holder is the threading.local itself.
        let spread = holder("_thread._local", vec![module("app"), e("attr", "state", "_thread._local")]);
        assert_eq!(classify(&spread, &ElementKinds::default()), LeakPattern::ThreadLocalAccumulation);
        let garbage = holder("builtins.list", vec![e("gc_garbage", "", "builtins.list")]);
        assert_eq!(classify(&garbage, &ElementKinds::default()), LeakPattern::UncollectableCycle);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = LeakPattern::ALL.iter().map(|p| p.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), LeakPattern::ALL.len());
        for p in LeakPattern::ALL {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
    }
}
