//! What the heap analysis found for one growing site: the serde mirror of the dictionaries
//! `heaptrail._native._analyse_holders` returns (documented in docs/holders.md).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a site's blocks sit under their holder.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The blocks are the holder's direct children (its keys, values, items), or their
    /// internal storage: the objects the code put into the holder.
    Element,
    /// The blocks sit deeper, inside the elements (a closure's captured list, an exception's
    /// frame locals).
    Content,
    /// The blocks are the holder's own internal storage (a dict's table that grows as entries
    /// are added at this line).
    Storage,
    /// The blocks are a dict holder's keys, or inside them: the index of what is stored.
    Key,
}

/// One step of the path from a root to the holder.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Edge {
    /// `module`, `gc_garbage`, `thread` (roots); `attr`, `key`, `index`, `member`, `closure`,
    /// `local`, `lru_cache`, `thread_local`, `referent`.
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// The function of a closure or local variable (`qualname`, or `qualname (file:line)`).
    #[serde(default)]
    pub of: Option<String>,
    /// `module.qualname` of the object this edge reaches.
    #[serde(rename = "type", default)]
    pub type_name: String,
}

/// The container that holds most of a site's reachable blocks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Holder {
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub len: Option<u64>,
    #[serde(default)]
    pub share: f64,
    pub role: Role,
    /// Root first, holder last.
    #[serde(default)]
    pub path: Vec<Edge>,
    /// When the growth is spread over like containers, items of one collection (one
    /// `listeners` list per event bus): how many; the holder is the biggest of them, and the
    /// path's step where they part reads `*` (`EventBus.listeners of app._buses[*]`).
    #[serde(default)]
    pub siblings: Option<u64>,
    /// Types of a sample of the holder's direct children, with counts.
    #[serde(default)]
    pub element_types: BTreeMap<String, u64>,
    /// Dict holders: types of a sample of its keys.
    #[serde(default)]
    pub key_types: Option<BTreeMap<String, u64>>,
    /// Where a sample of the holder's direct children (a dict's values, else its keys) were
    /// allocated: `(filename, lineno, count)`, most first.
    #[serde(default)]
    pub element_sites: Vec<(String, u32, u64)>,
    /// The most elements the holder can ever hold, when it has a size bound (an `lru_cache`'s
    /// `maxsize`, a deque's `maxlen`, a `maxsize`-like int attribute of the cache object the
    /// holder is or belongs to, while the holder is within it): its growth stops there, so it
    /// is not a leak.
    #[serde(default)]
    pub bound: Option<u64>,
}

/// The analysis of one site.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct HolderAnalysis {
    pub filename: String,
    pub lineno: u32,
    /// Live blocks whose traceback passes through the line.
    #[serde(default)]
    pub blocks: u64,
    /// Of them, reached from a root.
    #[serde(default)]
    pub reached: u64,
    /// Reached blocks that are the internal storage of an object allocated elsewhere.
    #[serde(default)]
    pub internal: u64,
    /// Where those owning objects were allocated: `(filename, lineno, blocks)`, most first.
    #[serde(default)]
    pub owner_sites: Vec<(String, u32, u64)>,
    /// The other analysed lines whose objects directly hold this line's reached objects (a
    /// dict's values, an instance's attributes): `(filename, lineno, blocks)`, most first.
    #[serde(default)]
    pub inside: Vec<(String, u32, u64)>,
    #[serde(default)]
    pub holder: Option<Holder>,
    #[serde(default)]
    pub pause_ms: f64,
    #[serde(default)]
    pub error: Option<String>,
}

impl HolderAnalysis {
    /// Most of the reached blocks are other objects' internal storage: the line did not create
    /// what grows, it only sized the storage of objects made elsewhere.
    pub fn is_mostly_internal(&self) -> bool {
        self.reached > 0 && self.internal * 2 >= self.reached
    }

    /// The other line whose objects hold at least half of this line's reached blocks: what
    /// this line makes is stored inside what that line makes.
    pub fn mostly_inside(&self) -> Option<(&str, u32)> {
        self.inside
            .first()
            .filter(|(_, _, n)| self.reached > 0 && n * 2 >= self.reached)
            .map(|(f, l, _)| (f.as_str(), *l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shape() {
        let text = r#"{"filename":"app.py","lineno":7,"blocks":10,"reached":9,"internal":1,
            "owner_sites":[["app.py",3,1]],
            "holder":{"type":"builtins.dict","len":9,"share":1.0,"role":"element",
              "path":[{"kind":"module","name":"app","of":null,"type":"builtins.module"},
                      {"kind":"attr","name":"_CACHE","of":null,"type":"builtins.dict"}],
              "element_types":{"builtins.str":9},"key_types":{"builtins.int":9}},
            "pause_ms":3.5,"error":null}"#;
        let a: HolderAnalysis = serde_json::from_str(text).unwrap();
        let holder = a.holder.as_ref().unwrap();
        assert_eq!(holder.role, Role::Element);
        assert_eq!(holder.path[1].name, "_CACHE");
        assert_eq!(a.owner_sites[0], ("app.py".to_string(), 3, 1));
        assert!(!a.is_mostly_internal());
    }

    #[test]
    fn unknown_fields_and_missing_holder_are_fine() {
        let a: HolderAnalysis =
            serde_json::from_str(r#"{"filename":"a","lineno":1,"error":"timeout","extra":1}"#)
                .unwrap();
        assert_eq!(a.holder, None);
        assert_eq!(a.error.as_deref(), Some("timeout"));
    }
}
