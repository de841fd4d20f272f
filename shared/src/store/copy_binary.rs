//! Rows in PostgreSQL's binary `COPY` format, for `COPY ... FROM STDIN (FORMAT binary)`.
//!
//! The format (PostgreSQL manual, "COPY", "Binary Format"): an 11-byte signature, a 32-bit
//! flags field and a 32-bit header-extension length; then per row a 16-bit field count and per
//! field a 32-bit length (-1 for NULL) followed by the value in the type's binary send format;
//! then a 16-bit -1 as the trailer. All integers are big-endian. Only the types the ledger
//! writes are here, each in the layout its `*_recv` function reads.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The binary COPY signature: `PGCOPY\n\xff\r\n\0`.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// The jsonb binary format's version byte.
const JSONB_VERSION: u8 = 1;

/// A binary COPY stream being written, one row at a time.
pub(crate) struct CopyRows {
    buf: Vec<u8>,
    n_fields: i16,
    /// Fields still expected in the current row (debug check of the row shape).
    left_in_row: i16,
}

impl CopyRows {
    /// A stream of rows of `n_fields` columns each, with room for about `capacity` bytes.
    pub(crate) fn new(n_fields: i16, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(SIGNATURE.len() + 10));
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0_i32.to_be_bytes()); // no header extension
        Self {
            buf,
            n_fields,
            left_in_row: 0,
        }
    }

    /// Starts a row; exactly `n_fields` fields must follow.
    pub(crate) fn row(&mut self) -> &mut Self {
        debug_assert_eq!(self.left_in_row, 0, "previous row is incomplete");
        self.buf.extend_from_slice(&self.n_fields.to_be_bytes());
        self.left_in_row = self.n_fields;
        self
    }

    fn field(&mut self, value: &[u8]) -> &mut Self {
        self.counted();
        self.length(value.len());
        self.buf.extend_from_slice(value);
        self
    }

    fn counted(&mut self) {
        debug_assert!(self.left_in_row > 0, "more fields than the row has");
        self.left_in_row -= 1;
    }

    fn length(&mut self, len: usize) {
        let len = i32::try_from(len).expect("a COPY field is under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
    }

    /// A NULL field.
    pub(crate) fn null(&mut self) -> &mut Self {
        self.counted();
        self.buf.extend_from_slice(&(-1_i32).to_be_bytes());
        self
    }

    /// A `uuid` field.
    pub(crate) fn uuid(&mut self, value: Uuid) -> &mut Self {
        self.field(value.as_bytes())
    }

    /// An `integer` field.
    pub(crate) fn int4(&mut self, value: i32) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    /// A `bigint` field, or NULL.
    pub(crate) fn int8(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(value) => self.field(&value.to_be_bytes()),
            None => self.null(),
        }
    }

    /// A `text` field (UTF-8, as the database encoding must be), or NULL.
    pub(crate) fn text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.field(value.as_bytes()),
            None => self.null(),
        }
    }

    /// A `timestamptz` field, or NULL.
    pub(crate) fn timestamptz(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        match value {
            Some(at) => {
                let micros = at.timestamp_micros() - POSTGRES_EPOCH_UNIX_MICROS;
                self.field(&micros.to_be_bytes())
            }
            None => self.null(),
        }
    }

    /// A `jsonb` field serialized straight from `value`, or NULL.
    ///
    /// # Errors
    /// When `value` cannot be serialized; the stream is unusable then.
    pub(crate) fn jsonb<T: serde::Serialize + ?Sized>(
        &mut self,
        value: Option<&T>,
    ) -> Result<&mut Self, serde_json::Error> {
        let Some(value) = value else {
            return Ok(self.null());
        };
        self.counted();
        let at = self.buf.len();
        self.buf.extend_from_slice(&0_i32.to_be_bytes());
        self.buf.push(JSONB_VERSION);
        serde_json::to_writer(&mut self.buf, value)?;
        let len = i32::try_from(self.buf.len() - at - 4).expect("a COPY field is under 2 GiB");
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(self)
    }

    /// The finished stream, trailer included.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        debug_assert_eq!(self.left_in_row, 0, "last row is incomplete");
        self.buf.extend_from_slice(&(-1_i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_its_field_count_then_length_prefixed_fields_and_the_stream_ends_with_minus_one() {
        let mut rows = CopyRows::new(3, 64);
        rows.row().int4(7).null().text(Some("ab"));
        let bytes = rows.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn jsonb_is_the_version_byte_then_the_json_text_and_its_length_covers_both() {
        let mut rows = CopyRows::new(1, 16);
        rows.row()
            .jsonb(Some(&serde_json::json!({"a": 1})))
            .unwrap();
        let bytes = rows.finish();
        let field = &bytes[19 + 2..bytes.len() - 2];
        assert_eq!(
            &field[..4],
            &8_i32.to_be_bytes(),
            "1 version byte + 7 of text"
        );
        assert_eq!(field[4], 1);
        assert_eq!(&field[5..], br#"{"a":1}"#);
    }

    #[test]
    fn timestamps_count_microseconds_from_the_year_2000() {
        let mut rows = CopyRows::new(1, 16);
        let at = DateTime::parse_from_rfc3339("2000-01-01T00:00:01.000002Z")
            .unwrap()
            .with_timezone(&Utc);
        rows.row().timestamptz(Some(at));
        let bytes = rows.finish();
        assert_eq!(&bytes[21..25], &8_i32.to_be_bytes());
        assert_eq!(&bytes[25..33], &1_000_002_i64.to_be_bytes());
    }
}
