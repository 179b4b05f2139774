//! A holder's path, written the way the user writes it in code.
//!
//! The path is a list of edges from a root (a module, `gc.garbage`, a thread's stack) to the
//! holder. Written out:
//! * a module global: `myapp.sessions._SESSIONS`;
//! * an attribute of an instance: `EventBus.listeners of myapp.events._bus`;
//! * a class attribute: `myapp.models.Registry.entries`;
//! * the cache of a function decorated with `functools.lru_cache`: `functools.lru_cache of
//!   myapp.service.Service.lookup`;
//! * a closure variable: `closure variable payload of handle.<locals>.<lambda>, in
//!   myapp.events._bus.listeners[0]`;
//! * a local variable of a running function: `local variable cache of main (app.py:12)`;
//! * a `threading.local` attribute: `threading.local attribute seen of myapp.state`;
//! * `gc.garbage`.
//!
//! Dict entries are written `[key]`, sequence items `[i]`, other references `->Type`.

use super::analysis::Edge;

/// Types whose instances are classes (an attribute reached through one is a class attribute):
/// `type` and the metaclasses of the standard library (`abc.ABCMeta`, `enum.EnumType`, ...).
pub(super) fn is_class_type(type_name: &str) -> bool {
    matches!(
        type_name,
        "builtins.type" | "abc.ABCMeta" | "enum.EnumType" | "enum.EnumMeta"
    ) || type_name.ends_with("Meta")
}

fn short_type(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

/// The edges written as one expression: `module.attr[key][0]->Type`.
fn dotted(path: &[Edge]) -> String {
    let mut out = String::new();
    for edge in path {
        match edge.kind.as_str() {
            "module" => out.push_str(&edge.name),
            "gc_garbage" => out.push_str("gc.garbage"),
            "thread" => out.push_str(&format!("<thread {}>", edge.name)),
            "attr" => {
                out.push('.');
                out.push_str(&edge.name);
            }
            "key" | "index" => {
                out.push('[');
                out.push_str(&edge.name);
                out.push(']');
            }
            "member" => out.push_str(&format!("{{{}}}", edge.name)),
            "local" => {
                // From a thread's stack: the running function says it all. Through an object
                // (an exception's traceback frame): say where that frame hangs.
                let owner = std::mem::take(&mut out);
                out.push_str(&format!(
                    "local variable {} of {}",
                    edge.name,
                    edge.of.as_deref().unwrap_or("?")
                ));
                if !owner.is_empty() && !owner.starts_with("<thread ") {
                    out.push_str(&format!(", in {owner}"));
                }
            }
            "closure" => {
                let owner = std::mem::take(&mut out);
                out.push_str(&format!(
                    "closure variable {} of {}",
                    edge.name,
                    edge.of.as_deref().unwrap_or("a function")
                ));
                if !owner.is_empty() {
                    out.push_str(&format!(", in {owner}"));
                }
            }
            "lru_cache" => {
                let owner = std::mem::take(&mut out);
                out.push_str(&format!("functools.lru_cache of {owner}"));
            }
            "bounded_lru_cache" => {
                let owner = std::mem::take(&mut out);
                out.push_str(&format!("functools.lru_cache({}) of {owner}", edge.name));
            }
            "thread_local" => out.push_str("<this thread>"),
            _ => out.push_str(&format!("->{}", short_type(&edge.type_name))),
        }
    }
    out
}

/// The holder's path as text; empty for an empty path.
pub fn holder_text(path: &[Edge]) -> String {
    let Some(last) = path.last() else {
        return String::new();
    };
    // A threading.local attribute: the per-thread dict's entry.
    if let Some(i) = path.iter().rposition(|e| e.kind == "thread_local") {
        let owner = dotted(&path[..i]);
        let rest = &path[i + 1..];
        if let Some(first) = rest.first() {
            if matches!(first.kind.as_str(), "key" | "attr") {
                let attr = first.name.trim_matches(|c| c == '\'' || c == '"');
                let tail = dotted(&rest[1..]);
                return format!("threading.local attribute {attr} of {owner}{tail}");
            }
        }
        return format!("threading.local of {owner}");
    }
    // An attribute of an instance: `Class.attr of path.to.instance`.
    if last.kind == "attr" && path.len() >= 2 && !path.iter().any(|e| is_wrapping(&e.kind)) {
        let parent = &path[path.len() - 2];
        let parent_is_namespace =
            matches!(parent.kind.as_str(), "module") || parent.type_name == "builtins.module";
        // Reached through a class attribute (`logging.Logger.manager`), the dotted form reads
        // as the code does; otherwise name the instance's class.
        let through_class = path[..path.len() - 2]
            .iter()
            .any(|e| is_class_type(&e.type_name));
        if !parent_is_namespace && !is_class_type(&parent.type_name) && !through_class {
            return format!(
                "{}.{} of {}",
                short_type(&parent.type_name),
                last.name,
                dotted(&path[..path.len() - 1])
            );
        }
    }
    dotted(path)
}

/// Edges whose text wraps what came before (the generic rule would misplace them).
fn is_wrapping(kind: &str) -> bool {
    matches!(kind, "closure" | "lru_cache" | "bounded_lru_cache" | "local")
}

/// The module a path starts from, when it starts at a module.
pub fn root_module(path: &[Edge]) -> Option<&str> {
    path.first()
        .filter(|e| e.kind == "module")
        .map(|e| e.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: &str, name: &str, type_name: &str) -> Edge {
        Edge {
            kind: kind.into(),
            name: name.into(),
            of: None,
            type_name: type_name.into(),
        }
    }

    fn of(mut edge: Edge, of: &str) -> Edge {
        edge.of = Some(of.into());
        edge
    }

    #[test]
    fn module_global() {
        let p = [
            e("module", "myapp.sessions", "builtins.module"),
            e("attr", "_SESSIONS", "builtins.dict"),
        ];
        assert_eq!(holder_text(&p), "myapp.sessions._SESSIONS");
    }

    #[test]
    fn instance_attribute() {
        let p = [
            e("module", "myapp.events", "builtins.module"),
            e("attr", "_bus", "myapp.events.EventBus"),
            e("attr", "listeners", "builtins.list"),
        ];
        assert_eq!(holder_text(&p), "EventBus.listeners of myapp.events._bus");
    }

    #[test]
    fn class_attribute_and_logging_registry() {
        let p = [
            e("module", "logging", "builtins.module"),
            e("attr", "Logger", "builtins.type"),
            e("attr", "manager", "logging.Manager"),
            e("attr", "loggerDict", "builtins.dict"),
        ];
        assert_eq!(holder_text(&p), "logging.Logger.manager.loggerDict");
        let p = [
            e("module", "app", "builtins.module"),
            e("attr", "Registry", "builtins.type"),
            e("attr", "entries", "builtins.dict"),
        ];
        assert_eq!(holder_text(&p), "app.Registry.entries");
    }

    #[test]
    fn lru_cache_of_a_method() {
        let p = [
            e("module", "svc", "builtins.module"),
            e("attr", "Service", "builtins.type"),
            e("attr", "lookup", "functools._lru_cache_wrapper"),
            e("lru_cache", "cache", "builtins.dict"),
        ];
        assert_eq!(holder_text(&p), "functools.lru_cache of svc.Service.lookup");
    }

    #[test]
    fn closure_local_thread_local_garbage() {
        let p = [
            e("module", "app", "builtins.module"),
            e("attr", "handlers", "builtins.list"),
            e("index", "0", "builtins.function"),
            of(e("closure", "payload", "builtins.list"), "handle.<locals>.<lambda>"),
        ];
        assert_eq!(
            holder_text(&p),
            "closure variable payload of handle.<locals>.<lambda>, in app.handlers[0]"
        );
        let p = [
            e("thread", "140", "builtins.frame"),
            of(e("local", "cache", "builtins.dict"), "main (app.py:12)"),
        ];
        assert_eq!(holder_text(&p), "local variable cache of main (app.py:12)");
        let p = [
            e("module", "app", "builtins.module"),
            e("attr", "_LAST_ERROR", "builtins.ValueError"),
            e("attr", "__traceback__", "builtins.traceback"),
            e("attr", "tb_frame", "builtins.frame"),
            of(e("local", "rows", "builtins.list"), "process (app.py:23)"),
        ];
        assert_eq!(
            holder_text(&p),
            "local variable rows of process (app.py:23), in app._LAST_ERROR.__traceback__.tb_frame"
        );
        let p = [
            e("module", "app", "builtins.module"),
            e("attr", "state", "_thread._local"),
            e("thread_local", "", "builtins.dict"),
            e("key", "'seen'", "builtins.list"),
        ];
        assert_eq!(holder_text(&p), "threading.local attribute seen of app.state");
        assert_eq!(holder_text(&[e("gc_garbage", "", "builtins.list")]), "gc.garbage");
        assert_eq!(holder_text(&[]), "");
    }
}
