//! Names that reach URLs, SQL and logs: rooms, identities, usernames.
//! Validated once at the edge so that no path trick (`..`, `/`, `%2f`, NUL)
//! travels further.

pub const ROOM_RULE: &str = "1 to 64 characters: letters, digits, '-' and '_'";
pub const IDENTITY_RULE: &str =
    "1 to 64 characters: letters, digits, '-', '_', '.' and '@', not starting with '.'";

/// A room name: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_room(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A participant identity or username: `[A-Za-z0-9_.@-]{1,64}`, no leading dot.
pub fn valid_identity(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_not_names() {
        for bad in ["", "..", "../etc", "a/b", "a%2fb", "a\0", "a b", "ä", &"x".repeat(65)] {
            assert!(!valid_room(bad), "{bad:?}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a:b"] {
            assert!(!valid_identity(bad), "{bad:?}");
        }
        assert!(valid_room("demo") && valid_room("Board_Room-2"));
        assert!(valid_identity("alice@example.org") && valid_identity("guest-1a2b"));
    }
}
