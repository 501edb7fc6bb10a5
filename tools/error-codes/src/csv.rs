//! Just enough RFC 4180 for the published error tables: comma-separated
//! fields, a field in double quotes may hold commas, line breaks and
//! doubled quotes (`""`), lines end in LF or CRLF.

/// Every record of `text`, each a list of fields (blank lines skipped).
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    // Whether the current field was quoted, so `"",x` keeps its empty field.
    let mut was_quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => return Err(format!("line {line}: stray quote in an unquoted field")),
            ',' => {
                row.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                if !(row.is_empty() && field.is_empty() && !was_quoted) {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                was_quoted = false;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {line}: unterminated quoted field"));
    }
    if !(row.is_empty() && field.is_empty() && !was_quoted) {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn quoted_fields_and_line_ends() {
        let rows = parse("a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\n\n\"\",z").unwrap();
        assert_eq!(
            rows,
            [vec!["a", "b"], vec!["x, y", "say \"hi\""], vec!["", "z"],]
        );
        assert_eq!(parse("a,\"b\nc\"\n").unwrap(), [vec!["a", "b\nc"]]);
        assert!(parse("a,\"b").is_err());
        assert!(parse("a,b\"c").is_err());
    }
}
