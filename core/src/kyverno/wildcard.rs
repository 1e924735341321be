//! Kyverno's wildcards, matched the way Kyverno matches them: `*` any run
//! of characters (also `/`, `.` and `:`), `?` exactly one character,
//! anything else itself, over the whole string. Used to decide examples
//! and to check the importer's automata against Kyverno's own rules.

/// Kyverno's wildcard match: `*` any run of characters (also `/`, `.`,
/// `:`), `?` exactly one character, everything else itself; over the whole
/// string. Linear: the last `*` is the only one ever grown.
pub(super) fn wildcard_match(pattern: &str, name: &str) -> bool {
    if pattern.is_ascii() && name.is_ascii() {
        // The common case, without allocating.
        return wildcard_match_in(pattern.as_bytes(), name.as_bytes());
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    wildcard_match_in(&p, &n)
}

fn wildcard_match_in<T: Copy + PartialEq + From<u8>>(p: &[T], n: &[T]) -> bool {
    let (star_char, one_char) = (T::from(b'*'), T::from(b'?'));
    let (mut px, mut nx) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while nx < n.len() {
        if px < p.len() {
            if p[px] == star_char {
                px += 1;
                if px == p.len() {
                    return true;
                }
                star = Some((px, nx));
                continue;
            }
            if p[px] == one_char || p[px] == n[nx] {
                px += 1;
                nx += 1;
                continue;
            }
        }
        match star {
            Some((star_px, star_nx)) => {
                star = Some((star_px, star_nx + 1));
                px = star_px;
                nx = star_nx + 1;
            }
            None => return false,
        }
    }
    p[px..].iter().all(|&c| c == star_char)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::automaton::Nfa;
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("*", "s3:GetObject", true)]
    #[case("", "s3:GetObject", false)]
    #[case("", "", true)]
    #[case("nginx*", "nginx.evil.example/x:1", true)]
    #[case("10.0.20.10*", "10.0.20.100:5000/x", true)]
    #[case("docker.io/*", "nginx:1.25", false)]
    #[case("my-bucket/In*/Ka*/Ban", "my-bucket/India/Karnataka/Area1/Ban", true)]
    #[case("my-bucket/In*/Ka*/Ban", "my-bucket/India/Karnataka/Bangalore", false)]
    #[case("my-?-bucket/abc*", "my--bucket/abc", false)]
    #[case("my-bucket/abc?efg", "my-bucket/abc/efg", true)]
    #[case("my-bucket/mnop*?and", "my-bucket/mnopand", false)]
    #[case("my-bucket/mnop*?and", "my-bucket/mnopqand", true)]
    #[case("a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false)]
    fn wildcard_like_kyverno(#[case] pattern: &str, #[case] name: &str, #[case] expected: bool) {
        assert_eq!(wildcard_match(pattern, name), expected, "{pattern} {name}");
        assert_eq!(
            Nfa::wildcard(pattern).accepts(name),
            expected,
            "nfa {pattern} {name}"
        );
    }
}
