//! What a name may be: an account's username (a stable identifier, chosen at
//! registration) and a session's display name (`set_username`). Both follow one set
//! of character rules ([`canonical_username`]); they differ in length.

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Shortest username `register` accepts and `login` checks (accounts taken over from
/// the Go server may be shorter: `store::takeover` counts them).
pub const MIN_USERNAME_CHARS: usize = 3;

/// Longest username `register` accepts. Accounts taken over from the Go server are
/// shorter still: its column was `VARCHAR(50)` (`store::takeover`).
pub const MAX_USERNAME_CHARS: usize = 64;

/// Longest display name `set_username` accepts.
pub const MAX_DISPLAY_NAME_CHARS: usize = 32;

/// The most bytes a display name in NFC can take (4 per character at most).
const MAX_DISPLAY_NAME_BYTES: usize = MAX_DISPLAY_NAME_CHARS * 4;

/// Longest `private_chat` target that can name anyone: an account's username or a
/// display name. A longer one is refused before any store is asked.
pub const MAX_TARGET_CHARS: usize =
    if MAX_USERNAME_CHARS > MAX_DISPLAY_NAME_CHARS { MAX_USERNAME_CHARS } else { MAX_DISPLAY_NAME_CHARS };

/// A username that is a stable identifier: in NFC (so one name has one spelling),
/// without control or invisible format characters (bidi overrides, zero-width
/// joiners, …), without leading or trailing whitespace. `None` when it cannot be one.
pub fn canonical_username(raw: &str) -> Option<String> {
    let name: String = if is_nfc(raw) { raw.to_owned() } else { raw.nfc().collect() };
    is_clean(&name).then_some(name)
}

/// Certainly in NFC, by Unicode's quick check (every ASCII string is): most names,
/// which then need no normalizing copy.
fn is_nfc(name: &str) -> bool {
    is_nfc_quick(name.chars()) == IsNormalized::Yes
}

/// No control or invisible format character, no leading or trailing whitespace.
fn is_clean(name: &str) -> bool {
    let invisible = |c: char| c.is_control() || is_format_char(c);
    name.trim() == name && !name.chars().any(invisible)
}

/// A display name in its one spelling, if `raw` can be one: the username rules, and
/// 1 to [`MAX_DISPLAY_NAME_CHARS`] characters once in NFC. No minimum beyond one
/// character: a display name identifies nobody (an account's name always wins as a
/// private message's target), and accounts taken over from the Go server may have
/// names of one or two characters.
pub fn display_name(raw: &str) -> Option<String> {
    if raw.len() <= MAX_DISPLAY_NAME_BYTES && is_nfc(raw) {
        return is_display_name(raw).then(|| raw.to_owned());
    }
    // Normalized lazily, one past the limit: a 16 KB name costs what a 33-character one does.
    let name: String = raw.nfc().take(MAX_DISPLAY_NAME_CHARS + 1).collect();
    if name.is_empty() || name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return None;
    }
    canonical_username(&name)
}

/// Whether `name` is a display name in its one spelling (what [`display_name`] makes
/// of it), without a copy when it is in NFC: a restored session's name is checked on
/// every `token_auth`.
pub fn is_display_name(name: &str) -> bool {
    if name.len() > MAX_DISPLAY_NAME_BYTES {
        return false; // more characters than a display name has, in any spelling that is its own
    }
    if !is_nfc(name) {
        return display_name(name).as_deref() == Some(name);
    }
    let chars = name.chars().count();
    (1..=MAX_DISPLAY_NAME_CHARS).contains(&chars) && is_clean(name)
}

/// Why a stored username is not a stable identifier (registration would have refused
/// it, or stored it in another spelling), if it is not.
pub fn unstable_username(name: &str) -> Option<&'static str> {
    match canonical_username(name) {
        None => Some("control or format characters, or leading/trailing whitespace"),
        Some(canonical) if canonical != name => Some("not in Unicode NFC"),
        Some(_) => None,
    }
}

/// Unicode general category Cf (format characters), as of Unicode 15.
fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_must_be_stable_identifiers() {
        assert_eq!(canonical_username("Jane Doe").as_deref(), Some("Jane Doe"));
        // e + combining acute becomes the precomposed é.
        assert_eq!(canonical_username("Re\u{301}my").as_deref(), Some("R\u{e9}my"));
        for bad in [" jane", "jane ", "   ", "ja\u{202e}ne", "ja\u{200b}ne", "ja\u{feff}ne", "ja\nne", "ja\u{7}ne"] {
            assert_eq!(canonical_username(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn display_names_are_usernames_of_one_to_32_characters() {
        for good in ["x", "CoolGamer42", "名前 🎮", r#"Cool"Gamer\42"#, &"é".repeat(32)] {
            assert_eq!(display_name(good).as_deref(), Some(good), "{good:?}");
        }
        // Counted once in NFC: 32 decomposed é are 64 code points but 32 characters.
        assert_eq!(display_name(&"e\u{301}".repeat(32)), Some("é".repeat(32)));
        for bad in ["", " x", "x ", "a\u{0}b", "a\u{202e}b", &"x".repeat(33), &"x".repeat(16_000)] {
            assert_eq!(display_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn is_display_name_says_what_display_name_keeps_unchanged() {
        let decomposed = "e\u{301}".repeat(3);
        for name in [
            "x",
            "CoolGamer42",
            "名前 🎮",
            &"é".repeat(32),
            &"🎮".repeat(32),
            &"🎮".repeat(33),
            "",
            " x",
            "a\u{202e}b",
            &decomposed,
            "R\u{e9}my",
            &"x".repeat(33),
            &"x".repeat(16_000),
        ] {
            assert_eq!(is_display_name(name), display_name(name).as_deref() == Some(name), "{name:?}");
        }
    }
}
