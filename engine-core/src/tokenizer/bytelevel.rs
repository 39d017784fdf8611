//! GPT-2's byte-level alphabet: every byte stands for one printable character, so that BPE
//! vocabularies can be stored as text. Printable Latin-1 bytes map to themselves; the 68 others
//! (controls, space, DEL, NBSP, soft hyphen...) map, in byte order, to U+0100 onwards.

/// Whether byte `b` is printable in the alphabet (maps to the code point of the same value).
const fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Byte -> code point of its character.
const BYTE_TO_CHAR: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut next = 0x100u32;
    let mut b = 0usize;
    while b < 256 {
        if is_printable(b as u8) {
            table[b] = b as u32;
        } else {
            table[b] = next;
            next += 1;
        }
        b += 1;
    }
    table
};

/// The non-printable bytes in order: `NON_PRINTABLE[i]` is represented by U+0100 + i.
const NON_PRINTABLE: [u8; 68] = {
    let mut table = [0u8; 68];
    let mut n = 0usize;
    let mut b = 0usize;
    while b < 256 {
        if !is_printable(b as u8) {
            table[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    table
};

/// The character that stands for byte `b`.
pub(crate) fn byte_to_char(b: u8) -> char {
    // Every table entry is below U+0144, a valid scalar value.
    char::from_u32(BYTE_TO_CHAR[b as usize]).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte that character `c` stands for, if it is in the alphabet.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x100 {
        let b = cp as u8;
        return is_printable(b).then_some(b);
    }
    NON_PRINTABLE.get((cp - 0x100) as usize).copied()
}

/// Appends the bytes a byte-level token text stands for. Characters outside the alphabet are
/// kept as their own UTF-8 bytes.
pub(crate) fn decode_into(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// The byte-level text of raw bytes.
pub(crate) fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'\t'), 'ĉ');
        assert_eq!(byte_to_char(0x00), '\u{100}');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert_eq!(byte_to_char(0xE6), 'æ');
    }

    #[test]
    fn round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('▁'), None);
    }
}
