//! Which `def` / `class` encloses each line of a Python source file, read as text.
//!
//! Snapshots record only `filename:lineno` per frame, but profile viewers (pprof's `-top`,
//! flame graphs) group and label by *function*. When the source file is still readable, this
//! scanner gives every line the qualified name Python itself would give the code running
//! there (`Cache.put`, `handler.<locals>.inner`, `<module>`), so exports can show names a user
//! recognises.
//!
//! It is a tokenizer-light line scanner, not a parser: it follows strings (including
//! triple-quoted ones), brackets, comments and backslash continuations only as far as needed to
//! find where logical lines start and how far they are indented. The file is only read, never
//! imported or executed, and the read is bounded ([`MAX_SOURCE_BYTES`]). Anything it cannot
//! place leaves the caller to fall back to `file:line`.
//!
//! A line of a `def`/`class` header (decorators and a multi-line signature included) belongs
//! to the *enclosing* scope, because that is where Python runs it: decorators and default
//! values are evaluated, and the function object is created, when the enclosing code reaches
//! the `def`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Source files larger than this are not scanned (real modules are far smaller; a huge file is
/// more likely generated data, and reading it would slow the export down for nothing).
pub const MAX_SOURCE_BYTES: u64 = 8 << 20;

/// A function or class body, or the module itself (index 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Python's `__qualname__` of the code: `<module>`, `Cache`, `Cache.put`,
    /// `outer.<locals>.inner`.
    pub qualname: String,
    /// Line of the `def`/`class` keyword (1 for the module).
    pub start_line: u32,
}

/// Every line's enclosing scope in one source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceScopes {
    pub scopes: Vec<Scope>,
    /// `line_scope[i]` is the index in `scopes` of line `i + 1`.
    line_scope: Vec<u32>,
}

impl SourceScopes {
    /// The scope of 1-based `lineno`, or None when the file has no such line (it changed since
    /// the snapshot, or the line number is 0).
    pub fn scope_of(&self, lineno: u32) -> Option<(usize, &Scope)> {
        let idx = *self.line_scope.get((lineno as usize).checked_sub(1)?)? as usize;
        Some((idx, &self.scopes[idx]))
    }

    /// Reads and scans `path`. None when it is not a regular, readable file of at most
    /// [`MAX_SOURCE_BYTES`] (or names no file at all, like `<frozen ...>` or `<string>`).
    pub fn read(path: &str) -> Option<SourceScopes> {
        if path.is_empty() || path.starts_with('<') {
            return None;
        }
        let p = Path::new(path);
        // Check before opening: opening a FIFO for reading would block until a writer comes.
        let meta = std::fs::metadata(p).ok()?;
        if !meta.is_file() || meta.len() > MAX_SOURCE_BYTES {
            return None;
        }
        let file = File::open(p).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None; // replaced between the two checks
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_SOURCE_BYTES + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        if bytes.len() as u64 > MAX_SOURCE_BYTES {
            return None;
        }
        Some(Self::scan(&String::from_utf8_lossy(&bytes)))
    }

    /// Scans source text.
    pub fn scan(text: &str) -> SourceScopes {
        let mut scopes = vec![Scope {
            qualname: "<module>".to_owned(),
            start_line: 1,
        }];
        // Open scopes: (indentation of the header, index in `scopes`, is a function).
        let mut stack: Vec<(usize, u32, bool)> = Vec::new();
        let mut line_scope = Vec::new();
        let mut lexer = LineLexer::default();
        // A header seen on the current logical line, entered once that line ends.
        let mut pending: Option<(usize, u32, bool)> = None;
        let mut logical_scope = 0u32;

        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let lineno = i as u32 + 1;
            if lexer.at_logical_start() {
                let (indent, rest) = indentation(line);
                if !rest.is_empty() && !rest.starts_with('#') {
                    while stack.last().is_some_and(|&(ind, _, _)| ind >= indent) {
                        stack.pop();
                    }
                    logical_scope = stack.last().map_or(0, |&(_, idx, _)| idx);
                    if let Some((is_function, name)) = header(rest) {
                        let qualname = match stack.last() {
                            None => name.to_owned(),
                            Some(&(_, parent, parent_is_function)) => {
                                let parent = &scopes[parent as usize].qualname;
                                if parent_is_function {
                                    format!("{parent}.<locals>.{name}")
                                } else {
                                    format!("{parent}.{name}")
                                }
                            }
                        };
                        scopes.push(Scope {
                            qualname,
                            start_line: lineno,
                        });
                        pending = Some((indent, (scopes.len() - 1) as u32, is_function));
                    }
                }
            }
            line_scope.push(logical_scope);
            lexer.scan_line(line);
            if lexer.at_logical_start() {
                if let Some(entered) = pending.take() {
                    stack.push(entered);
                }
            }
        }
        // `split` yields one empty piece after a final newline; it is not a line of the file.
        if text.ends_with('\n') {
            line_scope.pop();
        }
        SourceScopes { scopes, line_scope }
    }
}

/// Width of the leading whitespace as Python's tokenizer counts it (tabs to the next multiple
/// of 8, a form feed resets), and the rest of the line.
fn indentation(line: &str) -> (usize, &str) {
    let mut width = 0;
    for (pos, c) in line.char_indices() {
        match c {
            ' ' => width += 1,
            '\t' => width = (width / 8 + 1) * 8,
            '\x0c' => width = 0,
            _ => return (width, &line[pos..]),
        }
    }
    (width, "")
}

/// `(is_function, name)` when the logical line starts a `def`, `async def` or `class`.
fn header(rest: &str) -> Option<(bool, &str)> {
    let (is_function, after) = if let Some(a) = keyword(rest, "def") {
        (true, a)
    } else if let Some(a) = keyword(rest, "async").and_then(|a| keyword(a, "def")) {
        (true, a)
    } else if let Some(a) = keyword(rest, "class") {
        (false, a)
    } else {
        return None;
    };
    let end = after
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(after.len(), |(pos, _)| pos);
    let name = &after[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((is_function, name))
}

/// The text after `word` and the whitespace that must follow it, if `s` starts with them.
fn keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let after = s.strip_prefix(word)?;
    let trimmed = after.trim_start_matches([' ', '\t']);
    (trimmed.len() < after.len()).then_some(trimmed)
}

/// What carries over from one physical line to the next.
#[derive(Default)]
struct LineLexer {
    /// Inside a string that continues on the next line: its quote and whether it is triple.
    string: Option<(char, bool)>,
    /// Open brackets.
    depth: u32,
    /// The line ended with a backslash outside a string.
    continued: bool,
}

impl LineLexer {
    fn at_logical_start(&self) -> bool {
        self.string.is_none() && self.depth == 0 && !self.continued
    }

    fn scan_line(&mut self, line: &str) {
        self.continued = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if let Some((quote, triple)) = self.string {
                match c {
                    '\\' => {
                        // The escaped character cannot end the string; an escaped newline
                        // carries it over to the next line.
                        let escaped = chars.next();
                        if escaped.is_none() {
                            return;
                        }
                    }
                    c if c == quote => {
                        if !triple {
                            self.string = None;
                        } else if chars.peek() == Some(&quote) {
                            chars.next();
                            if chars.peek() == Some(&quote) {
                                chars.next();
                                self.string = None;
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match c {
                '#' => break,
                '\'' | '"' => {
                    // `''` is an empty string; `'''` opens a triple-quoted one.
                    if chars.peek() == Some(&c) {
                        chars.next();
                        if chars.peek() == Some(&c) {
                            chars.next();
                            self.string = Some((c, true));
                        }
                    } else {
                        self.string = Some((c, false));
                    }
                }
                '(' | '[' | '{' => self.depth += 1,
                ')' | ']' | '}' => self.depth = self.depth.saturating_sub(1),
                '\\' if chars.peek().is_none() => self.continued = true,
                _ => {}
            }
        }
        // A one-quote string cannot span lines without a backslash: that is a syntax error, and
        // carrying it over would misplace the rest of the file.
        if matches!(self.string, Some((_, false))) {
            self.string = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<String> {
        let s = SourceScopes::scan(src);
        (1..=s.line_scope.len() as u32)
            .map(|l| s.scope_of(l).unwrap().1.qualname.clone())
            .collect()
    }

    #[test]
    fn nested_classes_functions_and_headers() {
        let src = "\
import os
class Cache:
    size = [0] * 10
    @staticmethod
    def put(
        key, default=[],
    ):
        x = {}
        def inner():
            return [1]
        return inner
    async  def get(self):
        return 1

def after():
    pass
";
        assert_eq!(
            names(src),
            [
                "<module>",
                "<module>",
                "Cache",
                "Cache",
                "Cache",
                "Cache",
                "Cache",
                "Cache.put",
                "Cache.put",
                "Cache.put.<locals>.inner",
                "Cache.put",
                "Cache",
                "Cache.get",
                "Cache.get", // blank line: whatever was open
                "<module>",
                "after",
            ]
        );
        let s = SourceScopes::scan(src);
        assert_eq!(s.scope_of(8).unwrap().1.start_line, 5);
        assert_eq!(s.scope_of(17), None);
        assert_eq!(s.scope_of(0), None);
    }

    #[test]
    fn strings_comments_and_continuations_do_not_fool_it() {
        let src = "\
def f():
    '''
def not_a_function():
    '''
    s = \"def g(): # not a comment\" + \\
'x'
    t = ('(', \"\\\"\", '''
class NotAClass:''')
    return s
# comment at column 0 does not close f
    return t
x = 1
";
        let n = names(src);
        assert_eq!(n[0], "<module>");
        assert!(n[1..11].iter().all(|q| q == "f"), "{n:?}");
        assert_eq!(n[11], "<module>");
        assert_eq!(SourceScopes::scan(src).scopes.len(), 2);
    }

    #[test]
    fn tabs_crlf_and_one_line_bodies() {
        let src = "class A:\r\n\tdef m(self): return 1\r\n\tdef n(self):\r\n\t\treturn 2\r\n";
        assert_eq!(names(src), ["<module>", "A", "A", "A.n"]);
    }

    #[test]
    fn not_headers() {
        assert_eq!(header("define = 1"), None);
        assert_eq!(header("class_ = 2"), None);
        assert_eq!(header("def"), None);
        assert_eq!(header("async def run(x):"), Some((true, "run")));
        assert_eq!(header("class Ünï(Base):"), Some((false, "Ünï")));
    }

    #[test]
    fn read_refuses_what_is_not_a_regular_file() {
        assert!(SourceScopes::read("<frozen importlib._bootstrap>").is_none());
        assert!(SourceScopes::read("/nonexistent/heaptrail/x.py").is_none());
        assert!(SourceScopes::read("/").is_none());
        let dir = std::env::temp_dir().join(format!("heaptrail-scopes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.py");
        std::fs::write(&file, "def f():\n    return 1\n").unwrap();
        let s = SourceScopes::read(file.to_str().unwrap()).unwrap();
        assert_eq!(s.scope_of(2).unwrap().1.qualname, "f");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        /// Any text, however broken, gets one scope per line and never a panic.
        #[test]
        fn any_text_scans(text in r##"(def |class |async |[ \t\r\n'"#()\[\]{}:\\]|[a-zé]){0,200}"##) {
            let s = SourceScopes::scan(&text);
            let lines = text.split('\n').count() - usize::from(text.ends_with('\n'));
            proptest::prop_assert_eq!(s.line_scope.len(), lines);
            for l in 1..=lines as u32 {
                let (idx, scope) = s.scope_of(l).unwrap();
                proptest::prop_assert!(idx < s.scopes.len() && scope.start_line <= l);
            }
        }
    }
}
