//! Text from outside (a guest, a server, a request) made safe to show in a
//! log line or an audit record.

/// `text` cut to at most `max` characters, with control characters escaped:
/// safe to put in an error message or a record.
pub fn bounded_text(text: &str, max: usize) -> String {
    // Control characters, and the invisible ones that reorder or hide text
    // (bidi overrides, zero-width), are shown escaped.
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    let mut chars = text.chars();
    let mut out = String::with_capacity(text.len().min(max.saturating_mul(4)));
    for c in chars.by_ref().take(max) {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}
