//! `*` / `?` wildcard matching: what a pattern in a key store's `key_ids`
//! (see [`crate::keystores`]) means, and the same matcher the edge's XKS
//! secondary-authorization policy rules use. One implementation, so the
//! edge serving a key and keymeshctl assigning it agree on what a pattern
//! names.

/// Whole-string match; `*` matches any run (also empty), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `s` has a wildcard, i.e. names keys by pattern rather than by id.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::{glob_match, is_pattern};

    #[test]
    fn wildcards() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match(
            "arn:aws:iam::1111*",
            "arn:aws:iam::111122223333:role/x"
        ));
        assert!(!glob_match(
            "arn:aws:iam::2222*",
            "arn:aws:iam::111122223333:role/x"
        ));
        assert!(glob_match("key-?", "key-1"));
        assert!(!glob_match("key-?", "key-12"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(is_pattern("ledger-*") && is_pattern("k?") && !is_pattern("k1"));
    }
}
