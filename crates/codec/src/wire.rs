//! Primitive data types of the wire format (MQTT 5 §1.5): integers, variable byte integers,
//! UTF-8 strings, binary data. Reading slices the packet's `Bytes`, so strings and payloads
//! are not copied.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::{DecodeError, EncodeError};

/// Largest value of a variable byte integer (and so of a remaining length).
pub const MAX_VARINT: u32 = 268_435_455;

/// A cursor over one packet's body.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(DecodeError::UnexpectedEnd(what));
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(DecodeError::UnexpectedEnd(what));
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(DecodeError::UnexpectedEnd(what));
        }
        Ok(self.buf.get_u32())
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        match read_varint(&self.buf) {
            VarInt::Value(v, n) => {
                self.buf.advance(n);
                Ok(v)
            }
            VarInt::Incomplete => Err(DecodeError::UnexpectedEnd(what)),
            VarInt::TooLong | VarInt::NonMinimal => Err(DecodeError::MalformedVarInt),
        }
    }

    /// `n` raw bytes, sliced without copying.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd(what));
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything left (the payload of a PUBLISH).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Two-byte length prefixed binary data.
    pub(crate) fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(what)? as usize;
        self.take(len, what)
    }

    /// Two-byte length prefixed UTF-8 string, validated per [MQTT-1.5.4-1] and [MQTT-1.5.4-2].
    pub(crate) fn string(&mut self, what: &'static str) -> Result<ByteString, DecodeError> {
        let raw = self.binary(what)?;
        utf8(raw)
    }

    /// A sub-reader over the next `n` bytes (a property block).
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(n, what)?))
    }
}

/// Validate MQTT UTF-8: well-formed (Rust's validator rejects surrogates and overlongs) and no
/// U+0000.
pub(crate) fn utf8(raw: Bytes) -> Result<ByteString, DecodeError> {
    // a fold without an early exit vectorises; strings are short, so this beats memchr
    if raw.iter().fold(false, |nul, &b| nul | (b == 0)) {
        return Err(DecodeError::NullCharacter);
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)
}

/// Result of reading a variable byte integer from the front of a slice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and how many bytes it took.
    Value(u32, usize),
    /// The slice ends before the last byte.
    Incomplete,
    /// A fifth byte would be needed.
    TooLong,
    /// More bytes than the value needs [MQTT-1.5.5-1].
    NonMinimal,
}

pub(crate) fn read_varint(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for (i, &b) in buf.iter().enumerate().take(4) {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // a last byte of 0 after a continuation byte adds nothing: the value fits in fewer
            // bytes, which [MQTT-1.5.5-1] forbids
            if i > 0 && b == 0 {
                return VarInt::NonMinimal;
            }
            return VarInt::Value(value, i + 1);
        }
    }
    if buf.len() >= 4 {
        VarInt::TooLong
    } else {
        VarInt::Incomplete
    }
}

/// Bytes needed to encode `v` as a variable byte integer.
pub(crate) const fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(buf: &mut BytesMut, mut v: u32) {
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

pub(crate) fn check_len(len: usize, what: &'static str) -> Result<u16, EncodeError> {
    u16::try_from(len).map_err(|_| EncodeError::FieldTooLong(what))
}

pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    // lengths were checked by the size pass before anything is written
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// Where the property encoder writes to: either a byte counter or a buffer. One encoding
/// function per property set serves both the size pass and the write pass.
pub(crate) trait Sink {
    fn byte(&mut self, id: u8, v: u8);
    fn u16(&mut self, id: u8, v: u16);
    fn u32(&mut self, id: u8, v: u32);
    fn varint(&mut self, id: u8, v: u32);
    fn binary(&mut self, id: u8, v: &[u8]);
    fn pair(&mut self, id: u8, k: &str, v: &str);
}

/// Counts the bytes a property block takes and remembers the first over-long field.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    pub(crate) len: usize,
    pub(crate) too_long: bool,
    /// A variable byte integer value above [`MAX_VARINT`] (it cannot be encoded).
    pub(crate) varint_out_of_range: Option<u32>,
}

impl Counter {
    fn field(&mut self, n: usize) {
        if n > u16::MAX as usize {
            self.too_long = true;
        }
    }
}

impl Sink for Counter {
    fn byte(&mut self, _: u8, _: u8) {
        self.len += 2;
    }
    fn u16(&mut self, _: u8, _: u16) {
        self.len += 3;
    }
    fn u32(&mut self, _: u8, _: u32) {
        self.len += 5;
    }
    fn varint(&mut self, _: u8, v: u32) {
        if v > MAX_VARINT && self.varint_out_of_range.is_none() {
            self.varint_out_of_range = Some(v);
        }
        self.len += 1 + varint_len(v);
    }
    fn binary(&mut self, _: u8, v: &[u8]) {
        self.field(v.len());
        self.len += 3 + v.len();
    }
    fn pair(&mut self, _: u8, k: &str, v: &str) {
        self.field(k.len());
        self.field(v.len());
        self.len += 5 + k.len() + v.len();
    }
}

/// Writes properties into a buffer.
pub(crate) struct Writer<'a>(pub(crate) &'a mut BytesMut);

impl Sink for Writer<'_> {
    fn byte(&mut self, id: u8, v: u8) {
        self.0.put_u8(id);
        self.0.put_u8(v);
    }
    fn u16(&mut self, id: u8, v: u16) {
        self.0.put_u8(id);
        self.0.put_u16(v);
    }
    fn u32(&mut self, id: u8, v: u32) {
        self.0.put_u8(id);
        self.0.put_u32(v);
    }
    fn varint(&mut self, id: u8, v: u32) {
        self.0.put_u8(id);
        put_varint(self.0, v);
    }
    fn binary(&mut self, id: u8, v: &[u8]) {
        self.0.put_u8(id);
        put_binary(self.0, v);
    }
    fn pair(&mut self, id: u8, k: &str, v: &str) {
        self.0.put_u8(id);
        put_binary(self.0, k.as_bytes());
        put_binary(self.0, v.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(read_varint(&b), VarInt::Value(v, b.len()));
        }
    }

    #[test]
    fn varint_five_bytes_is_too_long_and_short_is_incomplete() {
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            VarInt::TooLong
        );
        assert_eq!(read_varint(&[0xFF, 0xFF]), VarInt::Incomplete);
        assert_eq!(read_varint(&[0x80, 0x00]), VarInt::NonMinimal);
        assert_eq!(read_varint(&[0xFF, 0x80, 0x80, 0x00]), VarInt::NonMinimal);
        assert_eq!(read_varint(&[0x80, 0x01]), VarInt::Value(128, 2));
        assert_eq!(read_varint(&[]), VarInt::Incomplete);
    }

    #[test]
    fn strings_reject_null_and_surrogates() {
        assert_eq!(
            utf8(Bytes::from_static(b"a\0b")),
            Err(DecodeError::NullCharacter)
        );
        // U+D800 encoded as UTF-8 (a surrogate) is ill-formed
        assert_eq!(
            utf8(Bytes::from_static(b"\xED\xA0\x80")),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            utf8(Bytes::from_static(b"\xC0\x80")),
            Err(DecodeError::InvalidUtf8)
        );
        assert!(utf8(Bytes::from_static("temp/°C".as_bytes())).is_ok());
    }
}
