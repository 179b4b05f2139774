//! HTML escaping. Everything the page shows from an input file (filenames, holder descriptions,
//! verdicts, the title) is attacker-controlled: a filename can be `<script>...`. Every such
//! string goes through [`push_escaped`] / [`escape`], which make it inert both in text and in
//! quoted attribute values.

/// Appends `s` to `out` with `& < > " '` replaced by entities. Control characters other than
/// tab and newline become U+FFFD: they are invalid in HTML and can confuse terminals that the
/// page's text is later pasted into.
pub fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// `s`, escaped for HTML text and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_and_quotes_become_entities() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        // Already-escaped text is escaped again (it is text, not markup).
        assert_eq!(escape("&lt;"), "&amp;lt;");
    }

    #[test]
    fn plain_and_unicode_text_is_kept() {
        assert_eq!(escape("/srv/app/é.py:12"), "/srv/app/é.py:12");
        assert_eq!(escape("a\tb\nc"), "a\tb\nc");
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(escape("a\0b\x1b[31mc\r"), "a\u{FFFD}b\u{FFFD}[31mc\u{FFFD}");
    }
}
