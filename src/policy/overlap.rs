//! Whether two container patterns can match the same name, and an example
//! name when they can: `check` warns when two projects' patterns overlap,
//! since a container both may deploy is shared between two teams.
//!
//! A pattern is read as globset reads a container pattern: `*` any run of
//! characters, `?` one, `[...]` one of a class (`[!...]` none of it), `\x`
//! the character `x`, `{a,b}` either alternative. Two patterns share a name
//! exactly when the product of the two patterns, read token against token,
//! can reach both ends; the search below walks that product, remembering
//! positions that fail, so it costs at most the product of their lengths.

use std::collections::HashSet;

/// One position of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    Star,
    /// Characters and ranges; `negated` when it starts with `!` or `^`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    /// A character this token accepts and `other` accepts too, if the two
    /// single-character tokens have one in common.
    fn common(&self, other: &Token) -> Option<char> {
        let candidates = |t: &Token| -> Vec<char> {
            match t {
                Token::Literal(c) => vec![*c],
                Token::Class {
                    negated: false,
                    ranges,
                } => ranges.iter().flat_map(|&(a, b)| [a, b]).collect(),
                // Container names use [a-zA-Z0-9_.-]; one of those will do.
                _ => "a0_.-Z".chars().collect(),
            }
        };
        candidates(self)
            .into_iter()
            .chain(candidates(other))
            .find(|c| self.accepts(*c) && other.accepts(*c))
    }

    fn accepts(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::Any | Token::Star => true,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(a, b)| a <= c && c <= b) != *negated
            }
        }
    }
}

/// More alternatives than a container pattern sensibly has; past it the
/// pattern is not expanded further and is read as matching anything there.
const MAX_ALTERNATIVES: usize = 64;

/// The pattern's token sequences, one per `{a,b}` alternative.
fn expand(pattern: &str) -> Vec<Vec<Token>> {
    let mut out = vec![Vec::new()];
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => push(&mut out, Token::Star),
            '?' => push(&mut out, Token::Any),
            '\\' => push(&mut out, Token::Literal(chars.next().unwrap_or('\\'))),
            '[' => {
                let negated = matches!(chars.peek(), Some('!' | '^'));
                if negated {
                    chars.next();
                }
                let mut ranges = Vec::new();
                let mut first = true;
                while let Some(c) = chars.next() {
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    if chars.peek() == Some(&'-') {
                        let mut ahead = chars.clone();
                        ahead.next();
                        if let Some(&end) = ahead.peek().filter(|&&e| e != ']') {
                            chars.next();
                            chars.next();
                            ranges.push((c, end));
                            continue;
                        }
                    }
                    ranges.push((c, c));
                }
                push(&mut out, Token::Class { negated, ranges });
            }
            '{' => {
                let mut body = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    body.push(c);
                }
                let alternatives: Vec<Vec<Vec<Token>>> = body.split(',').map(expand).collect();
                let count: usize = alternatives.iter().map(Vec::len).sum();
                if out.len().saturating_mul(count) > MAX_ALTERNATIVES {
                    push(&mut out, Token::Star);
                    continue;
                }
                out = out
                    .iter()
                    .flat_map(|prefix| {
                        alternatives.iter().flatten().map(move |alt| {
                            let mut joined = prefix.clone();
                            joined.extend(alt.iter().cloned());
                            joined
                        })
                    })
                    .collect();
            }
            c => push(&mut out, Token::Literal(c)),
        }
    }
    out
}

fn push(sequences: &mut [Vec<Token>], token: Token) {
    for sequence in sequences {
        sequence.push(token.clone());
    }
}

/// A name both token sequences match, if there is one.
fn witness(a: &[Token], b: &[Token]) -> Option<String> {
    fn walk(
        a: &[Token],
        b: &[Token],
        i: usize,
        j: usize,
        failed: &mut HashSet<(usize, usize)>,
        out: &mut String,
    ) -> bool {
        if failed.contains(&(i, j)) {
            return false;
        }
        let found = match (a.get(i), b.get(j)) {
            (None, None) => true,
            (Some(Token::Star), _) => {
                // The star matches nothing more, or takes b's next token.
                walk(a, b, i + 1, j, failed, out) || take(a, b, i, j, true, failed, out)
            }
            (_, Some(Token::Star)) => {
                walk(a, b, i, j + 1, failed, out) || take(a, b, i, j, false, failed, out)
            }
            (Some(x), Some(y)) => match x.common(y) {
                Some(c) => {
                    out.push(c);
                    walk(a, b, i + 1, j + 1, failed, out) || {
                        out.pop();
                        false
                    }
                }
                None => false,
            },
            _ => false,
        };
        if !found {
            failed.insert((i, j));
        }
        found
    }

    /// The star at `a[i]` (or `b[j]` when `!star_in_a`) takes one character
    /// of the other side's next token.
    fn take(
        a: &[Token],
        b: &[Token],
        i: usize,
        j: usize,
        star_in_a: bool,
        failed: &mut HashSet<(usize, usize)>,
        out: &mut String,
    ) -> bool {
        let other = if star_in_a { b.get(j) } else { a.get(i) };
        let Some(other) = other else {
            return false;
        };
        if *other == Token::Star {
            // Two stars: the other one ends here, this one goes on.
            let (ni, nj) = if star_in_a { (i, j + 1) } else { (i + 1, j) };
            return walk(a, b, ni, nj, failed, out);
        }
        let Some(c) = other.common(&Token::Star) else {
            return false;
        };
        out.push(c);
        let (ni, nj) = if star_in_a { (i, j + 1) } else { (i + 1, j) };
        walk(a, b, ni, nj, failed, out) || {
            out.pop();
            false
        }
    }

    let mut out = String::new();
    walk(a, b, 0, 0, &mut HashSet::new(), &mut out).then_some(out)
}

/// A container name both patterns match, if any.
pub fn shared_name(a: &str, b: &str) -> Option<String> {
    let (a, b) = (expand(a), expand(b));
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (x, y)))
        .find_map(|(x, y)| witness(x, y))
}

/// The characters before the first wildcard: two patterns can share a name
/// only if one's literal prefix starts the other's.
pub fn literal_prefix(pattern: &str) -> &str {
    let end = pattern
        .find(['*', '?', '[', '{', '\\'])
        .unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob_matches(pattern: &str, name: &str) -> bool {
        super::super::glob(pattern, super::super::GlobSyntax::ContainerName)
            .unwrap()
            .compile_matcher()
            .is_match(name)
    }

    #[test]
    fn overlapping_patterns_have_a_witness_both_match() {
        let pairs = [
            ("billing-*", "billing-web"),
            ("billing-*", "*-web"),
            ("*", "shop-db"),
            ("b?lling-*", "bi*"),
            ("app-[a-c]*", "app-b1"),
            ("{billing,shop}-web", "shop-*"),
            ("billing-*-1", "*-web-*"),
            ("a*b*c", "*x*"),
        ];
        for (a, b) in pairs {
            let name = shared_name(a, b).unwrap_or_else(|| panic!("{a} and {b} overlap"));
            assert!(
                glob_matches(a, &name) && glob_matches(b, &name),
                "{a} {b} -> {name}"
            );
        }
    }

    #[test]
    fn disjoint_patterns_have_none() {
        let pairs = [
            ("billing-*", "shop-*"),
            ("billing-web", "billing-db"),
            ("*-web", "*-db"),
            ("app-[a-c]", "app-[x-z]"),
            ("a?", "abc"),
            ("{billing,shop}-web", "crm-*"),
        ];
        for (a, b) in pairs {
            assert_eq!(shared_name(a, b), None, "{a} and {b}");
        }
    }

    #[test]
    fn prefixes_stop_at_the_first_wildcard() {
        assert_eq!(literal_prefix("billing-*"), "billing-");
        assert_eq!(literal_prefix("*-web"), "");
        assert_eq!(literal_prefix("web"), "web");
    }
}
