//! Tokens are random UUID v4s handed to the client; stores only ever see their SHA-256.

use uuid::Uuid;

/// SHA-256 of a token's canonical (lower-case, hyphenated) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The lower-case hex form (on every `token_auth`'s path: no allocation).
    pub fn hex(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        hex
    }
}

/// A token in canonical form (its text, kept inline: no allocation per `token_auth`).
#[derive(Debug, Clone)]
pub struct Token([u8; uuid::fmt::Hyphenated::LENGTH]);

impl Token {
    /// A new token from the OS random number generator.
    pub fn generate() -> Token {
        Token::from(Uuid::new_v4())
    }

    /// Accepts the hyphenated UUID form (any case), as the contract's examples show.
    pub fn parse(text: &str) -> Option<Token> {
        if text.len() != uuid::fmt::Hyphenated::LENGTH {
            return None;
        }
        Uuid::try_parse(text).ok().map(Token::from)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a hyphenated UUID is ASCII")
    }

    /// SHA-256 by `ring` (already the TLS provider), whose assembly is several times
    /// cheaper than a portable implementation wherever the CPU's SHA extensions are
    /// not used: this is on every `token_auth`'s path.
    pub fn hash(&self) -> TokenHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        TokenHash(digest.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }
}

impl From<Uuid> for Token {
    fn from(uuid: Uuid) -> Token {
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        uuid.hyphenated().encode_lower(&mut text);
        Token(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn parse_accepts_only_hyphenated_uuids() {
        assert!(Token::parse("550e8400-e29b-41d4-a716-446655440000").is_some());
        assert!(Token::parse("550E8400-E29B-41D4-A716-446655440000").is_some());
        assert!(Token::parse("550e8400e29b41d4a716446655440000").is_none());
        assert!(Token::parse("not-a-token").is_none());
        assert!(Token::parse("").is_none());
    }

    #[test]
    fn case_does_not_change_the_hash() {
        let a = Token::parse("550e8400-e29b-41d4-a716-446655440000").unwrap();
        let b = Token::parse("550E8400-E29B-41D4-A716-446655440000").unwrap();
        assert_eq!(a.hash(), b.hash());
    }

    #[test]
    fn hex_form_is_lower_case_sha256() {
        let out = Token::parse("550e8400-e29b-41d4-a716-446655440000").unwrap().hash().hex();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            hex::encode(Sha256::digest(b"550e8400-e29b-41d4-a716-446655440000"))
        );
    }

    #[test]
    fn generated_tokens_are_v4() {
        let t = Token::generate();
        assert_eq!(Uuid::parse_str(t.as_str()).unwrap().get_version_num(), 4);
    }
}
