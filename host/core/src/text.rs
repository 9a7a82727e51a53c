//! Text from outside (a guest, a server, a request) made safe to show in a
//! log line or an audit record.

/// `text` cut to at most `max` characters, with control characters escaped:
/// safe to put in an error message or a record.
pub fn bounded_text(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .flat_map(|c| {
            // Control characters, and the invisible ones that reorder or
            // hide text (bidi overrides, zero-width), are shown escaped.
            if c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
            {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}
