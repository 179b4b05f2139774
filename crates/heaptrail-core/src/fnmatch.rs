//! Filename patterns with the exact semantics of Python's `fnmatch.fnmatchcase` on POSIX, plus the
//! filename normalization `tracemalloc` applies before matching.
//!
//! Python compiles a shell pattern to a regular expression. We do not want a regex engine (nor its
//! worst cases), so the pattern is compiled to a list of tokens and matched with the classic
//! two-pointer wildcard algorithm: on a mismatch, only the most recent `*` is retried one character
//! further on. That is enough because every non-star token matches exactly one character, and it
//! is what CPython itself does (3.12+ wraps each `*fixed` piece in an atomic group), so results
//! agree and time stays O(len(name) * len(pattern)) even on `a*a*a*a*b`.
//!
//! Character sets (`[...]`) are the subtle part: Python rewrites the set into a regex class,
//! dropping "empty" ranges such as `z-a` in a particular way, and then the regex parser reads that
//! class. [`parse_set`] follows both steps so odd sets (`[z-a]`, `[!b-a]`, `[a-b-c]`, `[]-a]`)
//! behave as they do in CPython.

use std::borrow::Cow;

/// `tracemalloc._normalize_filename` on POSIX: `os.path.normcase` is the identity, and a `.pyc`
/// suffix loses its `c` (so a filter on `x.py` also matches frames reported as `x.pyc`). `.pyo` is
/// left alone, as in Python >= 3.5.
pub fn normalize_filename(name: &str) -> Cow<'_, str> {
    match name.strip_suffix(".pyc") {
        Some(stem) => Cow::Owned(format!("{stem}.py")),
        None => Cow::Borrowed(name),
    }
}

/// A set of characters: `negated` XOR "the character is in one of `ranges`".
/// A literal `c` is stored as the range `(c, c)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CharSet {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl CharSet {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// One literal character.
    Char(char),
    /// `?`, and the degenerate set `[!]`-after-rewriting: any one character (newlines included,
    /// Python compiles with DOTALL).
    AnyChar,
    /// `[...]`: one character from (or not from) a set. An empty set never matches.
    Set(CharSet),
    /// `*` (runs of stars are collapsed): any sequence, `/` included.
    Star,
}

impl Token {
    /// Does this single-character token accept `c`? (Never called for `Star`.)
    fn accepts(&self, c: char) -> bool {
        match self {
            Token::Char(x) => *x == c,
            Token::AnyChar => true,
            Token::Set(set) => set.contains(c),
            Token::Star => unreachable!("stars are handled by the matcher"),
        }
    }
}

/// A compiled shell pattern. Build it once, match many names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
    /// The pattern has no wildcard at all: matching is plain string equality.
    literal: bool,
}

impl Pattern {
    /// Compiles `pattern`. Never fails: like Python, anything that is not a valid wildcard is a
    /// literal (an unclosed `[` is the character `[`; `\` is an ordinary character).
    pub fn new(pattern: &str) -> Pattern {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::AnyChar),
                '[' => match parse_set(&chars, i) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => tokens.push(Token::Char('[')),
                },
                _ => tokens.push(Token::Char(c)),
            }
        }
        let literal = tokens.iter().all(|t| matches!(t, Token::Char(_)));
        Pattern {
            source: pattern.to_owned(),
            tokens,
            literal,
        }
    }

    /// The text the pattern was built from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// `fnmatch.fnmatchcase(name, pattern)`: does the pattern match the whole of `name`?
    pub fn matches(&self, name: &str) -> bool {
        if self.literal {
            return name == self.source;
        }
        let toks = &self.tokens;
        let (mut t, mut s) = (0usize, 0usize); // token index, byte offset in `name`
                                               // Most recent star: (token after it, byte offset where its match currently ends).
        let mut star: Option<(usize, usize)> = None;
        loop {
            if t < toks.len() {
                if toks[t] == Token::Star {
                    star = Some((t + 1, s));
                    t += 1;
                    continue;
                }
                if let Some(c) = name[s..].chars().next() {
                    if toks[t].accepts(c) {
                        t += 1;
                        s += c.len_utf8();
                        continue;
                    }
                }
            } else if s == name.len() {
                return true;
            }
            // Mismatch: let the last star swallow one more character and retry after it.
            match star {
                Some((after, end)) => match name[end..].chars().next() {
                    Some(c) => {
                        let end = end + c.len_utf8();
                        star = Some((after, end));
                        t = after;
                        s = end;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }
}

/// One element of a set's body as Python's rewritten regex class sees it: a literal character
/// (escaped or not, which no longer matters) or an unescaped `-` that the rewrite meant as a range
/// separator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyTok {
    Lit(char),
    Sep,
}

/// Parses the set that starts after the `[` at `pat[start - 1]`. Returns the token and the index
/// after the closing `]`, or `None` if the set is not closed (then `[` is a literal).
fn parse_set(pat: &[char], start: usize) -> Option<(Token, usize)> {
    let n = pat.len();
    // Find the closing bracket. A `]` right after `[` or `[!` is a member, not the end.
    let mut j = start;
    if j < n && pat[j] == '!' {
        j += 1;
    }
    if j < n && pat[j] == ']' {
        j += 1;
    }
    while j < n && pat[j] != ']' {
        j += 1;
    }
    if j >= n {
        return None;
    }
    let stuff = &pat[start..j];
    let body: Vec<BodyTok> = if !stuff.contains(&'-') {
        stuff.iter().map(|&c| BodyTok::Lit(c)).collect()
    } else {
        range_chunks_to_body(pat, start, j)
    };
    Some((set_token_from_body(&body), j + 1))
}

/// CPython splits a set containing `-` into chunks at the hyphens that form ranges, then drops
/// every range whose ends are reversed (`z-a`) by gluing the neighbouring chunks together without
/// their facing ends. Hyphens inside chunks become literal `-`.
fn range_chunks_to_body(pat: &[char], mut i: usize, j: usize) -> Vec<BodyTok> {
    let mut chunks: Vec<Vec<char>> = Vec::new();
    // A leading `!` (negation) or a leading `-` is never a range separator.
    let mut k = if pat[i] == '!' { i + 2 } else { i + 1 };
    while let Some(pos) = (k..j).find(|&p| pat[p] == '-') {
        chunks.push(pat[i..pos].to_vec());
        i = pos + 1;
        // The character after a range's end can't start another range: `a-b-c` is the range
        // a-b, a literal `-` and `c`.
        k = pos + 3;
    }
    let last = &pat[i..j];
    if last.is_empty() {
        // A trailing `-` (as in `[a-]`) is literal. `chunks` is non-empty here because the set
        // contains a `-` and the first chunk always holds at least one character.
        if let Some(prev) = chunks.last_mut() {
            prev.push('-');
        }
    } else {
        chunks.push(last.to_vec());
    }
    for k in (1..chunks.len()).rev() {
        let reversed = match (chunks[k - 1].last(), chunks[k].first()) {
            (Some(lo), Some(hi)) => lo > hi,
            _ => false, // unreachable by construction; Python would raise IndexError
        };
        if reversed {
            let tail: Vec<char> = chunks[k][1..].to_vec();
            let prev = &mut chunks[k - 1];
            prev.pop();
            prev.extend(tail);
            chunks.remove(k);
        }
    }
    let mut body = Vec::new();
    for (idx, chunk) in chunks.iter().enumerate() {
        if idx > 0 {
            body.push(BodyTok::Sep);
        }
        body.extend(chunk.iter().map(|&c| BodyTok::Lit(c)));
    }
    body
}

/// Reads a rewritten set body the way Python's regex parser reads a `[...]` class.
fn set_token_from_body(body: &[BodyTok]) -> Token {
    match body {
        // Everything was dropped: `(?!)`, matches nothing.
        [] => {
            return Token::Set(CharSet {
                negated: false,
                ranges: Vec::new(),
            })
        }
        // Only the negation is left: Python emits `.`, any character.
        [BodyTok::Lit('!')] => return Token::AnyChar,
        _ => {}
    }
    let (negated, rest) = match body {
        [BodyTok::Lit('!'), rest @ ..] => (true, rest),
        _ => (false, body),
    };
    let as_char = |t: BodyTok| match t {
        BodyTok::Lit(c) => c,
        BodyTok::Sep => '-',
    };
    let mut ranges = Vec::new();
    let mut t = 0;
    while t < rest.len() {
        let lo = as_char(rest[t]);
        t += 1;
        if t < rest.len() && rest[t] == BodyTok::Sep {
            t += 1;
            match rest.get(t) {
                // `x-]`: a literal `x` and a literal `-`.
                None => {
                    ranges.push((lo, lo));
                    ranges.push(('-', '-'));
                }
                Some(&hi) => {
                    let hi = as_char(hi);
                    t += 1;
                    // Reversed ranges were removed above; Python's parser would reject one.
                    debug_assert!(lo <= hi, "reversed range survived rewriting");
                    ranges.push((lo, hi));
                }
            }
        } else {
            ranges.push((lo, lo));
        }
    }
    Token::Set(CharSet { negated, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, pat: &str) -> bool {
        Pattern::new(pat).matches(name)
    }

    /// `tracemalloc.Filter(True, pattern)._match_frame(filename, 0)`: normalize both sides.
    fn tm(name: &str, pat: &str) -> bool {
        Pattern::new(&normalize_filename(pat)).matches(&normalize_filename(name))
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_filename("a.pyc"), "a.py");
        assert_eq!(normalize_filename("a.py"), "a.py");
        assert_eq!(normalize_filename("a.pyo"), "a.pyo");
        assert_eq!(normalize_filename(".pyc"), ".py");
        assert_eq!(normalize_filename("A.PYC"), "A.PYC");
        assert!(matches!(normalize_filename("x.py"), Cow::Borrowed(_)));
    }

    // Port of test_tracemalloc.TestFilters.test_filter_match_filename_joker (POSIX branch).
    #[test]
    fn stdlib_joker_cases() {
        assert!(!tm("abc", ""));
        assert!(!tm("", "abc"));
        assert!(tm("", ""));
        assert!(tm("", "*"));

        assert!(tm("abc", "abc"));
        assert!(!tm("abc", "abcd"));
        assert!(!tm("abc", "def"));

        assert!(tm("abc", "a*"));
        assert!(tm("abc", "abc*"));
        assert!(!tm("abc", "b*"));
        assert!(!tm("abc", "abcd*"));

        assert!(tm("abc", "a*c"));
        assert!(tm("abcdcx", "a*cx"));
        assert!(!tm("abb", "a*c"));
        assert!(!tm("abcdce", "a*cx"));

        assert!(tm("abcde", "a*c*e"));
        assert!(tm("abcbdefeg", "a*bd*eg"));
        assert!(!tm("abcdd", "a*c*e"));
        assert!(!tm("abcbdefef", "a*bd*eg"));

        assert!(tm("a.pyc", "a.py"));
        assert!(tm("a.py", "a.pyc"));

        assert!(!tm("aBC", "ABc"));
        assert!(!tm("aBcDe", "Ab*dE"));
        assert!(!tm("a.pyc", "a.PY"));
        assert!(!tm("a.py", "a.PYC"));

        assert!(!tm(r"a/b", r"a\b"));
        assert!(!tm(r"a\b", r"a/b"));
        assert!(!tm(r"a/b\c", r"a\b/c"));
        assert!(!tm(r"a/b/c", r"a\b\c"));

        assert!(!tm("a.pyo", "a.py"));
    }

    // Port of test_filter_match_filename (the pattern part).
    #[test]
    fn stdlib_filename_cases() {
        assert!(tm("abc", "abc"));
        assert!(!tm("12356", "abc"));
        assert!(!tm("<unknown>", "abc"));
    }

    #[test]
    fn wildcards() {
        assert!(m("/usr/lib/python3.13/json/decoder.py", "*/json/*"));
        assert!(m("a/b/c", "a*c")); // `*` crosses `/`
        assert!(m("abc", "a?c"));
        assert!(!m("ac", "a?c"));
        assert!(m("a\nc", "a?c")); // DOTALL
        assert!(m("a\nc", "a*c"));
        assert!(m("aé€c", "a??c")); // `?` is one character, not one byte
        assert!(m("", "**"));
        assert!(m("x", "***x***"));
        assert!(m("aaa", "a*a"));
        assert!(!m("aaa", "a*b"));
        assert!(m("abcabd", "*abd"));
        assert!(m("mississippi", "*sip*"));
        assert!(!m("mississippi", "*sap*"));
        assert!(m(r"a\b", r"a\b")); // backslash is literal
        assert!(m(r"a\*", r"a\*"));
        assert!(m(r"a\xyz", r"a\*"));
        assert!(m("{a,b}", "{a,b}")); // no braces
        assert!(!m("a", "{a,b}"));
    }

    #[test]
    fn sets() {
        assert!(m("b", "[abc]"));
        assert!(!m("d", "[abc]"));
        assert!(m("d", "[!abc]"));
        assert!(!m("a", "[!abc]"));
        assert!(m("\n", "[!abc]"));
        assert!(m("q", "[a-z]"));
        assert!(!m("Q", "[a-z]"));
        assert!(m("Q", "[a-zA-Z]"));
        assert!(m("-", "[-a]"));
        assert!(m("-", "[a-]"));
        assert!(m("a", "[a-]"));
        assert!(!m("b", "[a-]"));
        assert!(!m("-", "[!-a]"));
        assert!(m("b", "[!-a]"));
        // `]` first is a member.
        assert!(m("]", "[]]"));
        assert!(m("]", "[]a]"));
        assert!(m("a", "[]a]"));
        assert!(!m("]", "[!]]"));
        assert!(m("x", "[!]]"));
        // Unclosed sets are literal brackets.
        assert!(m("[", "["));
        assert!(m("[ab", "[ab"));
        assert!(m("[]", "[]"));
        assert!(m("[!]", "[!]"));
        assert!(m("[x", "[*"));
        // `[` and `^` inside a set are members; no escapes.
        assert!(m("[", "[[]"));
        assert!(m("^", "[^a]"));
        assert!(m("a", "[^a]"));
        assert!(!m("b", "[^a]"));
        assert!(m("\\", r"[\]"));
        assert!(m("\\", r"[\-x]") && !m("-", r"[\-x]"));
        assert!(m("&", "[&&a]") && m("|", "[|~]") && m("~", "[|~]"));
        assert!(m("é", "[à-ü]"));
    }

    /// Sets whose rewriting is odd in CPython; expected values checked against Python 3.13's
    /// `fnmatch.fnmatchcase`.
    #[test]
    fn odd_sets_like_cpython() {
        // Reversed range: empty, never matches.
        assert!(!m("z", "[z-a]"));
        assert!(!m("a", "[z-a]"));
        assert!(!m("-", "[z-a]"));
        // Negated empty: any character.
        assert!(m("q", "[!z-a]"));
        assert!(m("-", "[!z-a]"));
        // Range, literal `-`, literal.
        assert!(m("b", "[a-b-c]"));
        assert!(m("-", "[a-b-c]"));
        assert!(m("c", "[a-b-c]"));
        assert!(!m("bb", "[a-b-c]"));
        // `a--b`: the range a..'-' is reversed and dropped with its ends: only `b` is left.
        assert!(m("b", "[a--b]"));
        assert!(!m("a", "[a--b]"));
        assert!(!m("-", "[a--b]"));
        // Range from a literal `-`: `[a-b--c]` is a-b plus '-'..'c'.
        assert!(m("0", "[a-b--c]"));
        assert!(m("b", "[a-b--c]"));
        assert!(!m("d", "[a-b--c]"));
        // `[z-a!]`: the rewrite leaves just `!`, which Python turns into "any character".
        assert!(m("q", "[z-a!]"));
        // `[!b-a-c]`: not in {'-', 'c'}.
        assert!(!m("-", "[!b-a-c]"));
        assert!(!m("c", "[!b-a-c]"));
        assert!(m("b", "[!b-a-c]"));
        // `]` can start a range.
        assert!(m("^", "[]-a]"));
        assert!(!m("b", "[]-a]"));
        // `[!b-ad-e]`: not in d..e.
        assert!(m("b", "[!b-ad-e]"));
        assert!(!m("d", "[!b-ad-e]"));
        assert!(m("-", "[b-a-]"));
        assert!(!m("b", "[b-a-]"));
    }

    #[test]
    fn no_exponential_blowup() {
        let name = "a".repeat(10_000);
        let start = std::time::Instant::now();
        assert!(!m(&name, "a*a*a*a*a*a*a*a*a*a*a*a*b"));
        assert!(!m(&name, "*a*a*a*a*a*a*a*a*a*a*a*[b]*"));
        assert!(m(&name, "a*a*a*a*a*a*a*a*a*a*a*a*a"));
        assert!(start.elapsed().as_secs() < 5);
    }
}
