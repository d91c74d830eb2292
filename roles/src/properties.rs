//! Java `.properties` files, written from typed maps with proper escaping and
//! parsed back (for tests and for diffing what is on disk).

use std::collections::BTreeMap;

/// Escapes a key or value for `java.util.Properties.load`: `\`, control
/// characters and non-ASCII always; `=`, `:`, `#`, `!` and spaces in keys; a
/// leading space in values.
fn escape(text: &str, is_key: bool, out: &mut String) {
    for (i, c) in text.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{c}' => out.push_str("\\f"),
            // Only a key can end early at these; in a value they are literal,
            // so values stay readable (`listeners=CLIENT://10.0.1.11:9092`).
            '=' | ':' | '#' | '!' if is_key => {
                out.push('\\');
                out.push(c);
            }
            ' ' if is_key || i == 0 => out.push_str("\\ "),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// Renders `entries` as a properties file: a comment header, then one
/// `key=value` line per entry in key order. Same input, same bytes.
pub fn render(header: &str, entries: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    for (key, value) in entries {
        escape(key, true, &mut out);
        out.push('=');
        escape(value, false, &mut out);
        out.push('\n');
    }
    out
}

/// Why a properties file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a properties file as `java.util.Properties.load` does, for the
/// subset [`render`] writes plus continuation lines and `:` separators.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let mut map = BTreeMap::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, raw)) = lines.next() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let mut logical = trimmed.to_owned();
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_entry(&logical);
        let key = unescape(&key).map_err(|message| ParseError {
            line: n + 1,
            message,
        })?;
        let value = unescape(&value).map_err(|message| ParseError {
            line: n + 1,
            message,
        })?;
        map.insert(key, value);
    }
    Ok(map)
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

fn split_entry(line: &str) -> (String, String) {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut key = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            key.push(c);
            key.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if c == '=' || c == ':' || c == ' ' || c == '\t' || c == '\u{c}' {
            break;
        }
        key.push(c);
        i += 1;
    }
    while i < chars.len() && matches!(chars[i], ' ' | '\t' | '\u{c}') {
        i += 1;
    }
    if i < chars.len() && matches!(chars[i], '=' | ':') {
        i += 1;
        while i < chars.len() && matches!(chars[i], ' ' | '\t' | '\u{c}') {
            i += 1;
        }
    }
    (key, chars[i..].iter().collect())
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut units: Vec<u16> = Vec::new();
    let mut chars = s.chars();
    let flush = |units: &mut Vec<u16>, out: &mut String| -> Result<(), String> {
        if !units.is_empty() {
            out.push_str(
                &String::from_utf16(units).map_err(|_| "invalid \\u escape sequence".to_owned())?,
            );
            units.clear();
        }
        Ok(())
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut units, &mut out)?;
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let unit = u16::from_str_radix(&hex, 16)
                    .map_err(|_| format!("invalid \\u escape {hex:?}"))?;
                units.push(unit);
            }
            Some(e) => {
                flush(&mut units, &mut out)?;
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'f' => '\u{c}',
                    other => other,
                });
            }
            None => {}
        }
    }
    flush(&mut units, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_java_escapes() {
        let entries = BTreeMap::from([
            ("a.b".to_owned(), "x=y:z #!".to_owned()),
            (
                "jaas".to_owned(),
                r#"Module required username="u" password="p\q";"#.to_owned(),
            ),
            ("lead".to_owned(), " spaced".to_owned()),
            ("uni".to_owned(), "é".to_owned()),
        ]);
        let text = render("generated", &entries);
        assert_eq!(
            text,
            "# generated\na.b=x=y:z #!\njaas=Module required username=\"u\" password=\"p\\\\q\";\nlead=\\ spaced\nuni=\\u00E9\n"
        );
        assert_eq!(parse(&text).expect("parses"), entries);
    }

    #[test]
    fn parses_continuations_and_colons() {
        let map = parse("k1 : v1\nk2=a\\\n    b\n! comment\n").expect("parses");
        assert_eq!(map["k1"], "v1");
        assert_eq!(map["k2"], "ab");
    }
}
