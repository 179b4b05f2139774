//! LEB128 varints and a bounds-checked cursor over the inflated body.
//!
//! The cursor never indexes out of bounds and never panics: every read returns `Err` with a
//! short description of what it was reading, which the decoder turns into a `FormatError`.

/// Appends `v` as an unsigned LEB128 varint (1 byte for 0..=127, at most 10 bytes).
#[inline]
pub(crate) fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag mapping, so that small negative deltas stay small: 0, -1, 1, -2 -> 0, 1, 2, 3.
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A read position in a byte slice. Errors are plain strings ("truncated ...") because the
/// decoder adds the context (which table, which entry) itself.
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Reads one varint. Rejects varints longer than 10 bytes or whose value exceeds `u64`,
    /// so a run of 0x80 bytes cannot make us loop or silently wrap.
    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        // Fast path: most values in a snapshot (domains, small sizes, deltas) fit in one byte.
        if let Some((&b, rest)) = self.rest.split_first() {
            if b < 0x80 {
                self.rest = rest;
                return Ok(u64::from(b));
            }
        }
        let mut value: u64 = 0;
        for (i, &b) in self.rest.iter().enumerate().take(10) {
            let low = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err("varint overflows 64 bits");
            }
            value |= low << (7 * i);
            if b < 0x80 {
                self.rest = self.rest.get(i + 1..).unwrap_or(&[]);
                return Ok(value);
            }
        }
        if self.rest.len() >= 10 {
            Err("varint longer than 10 bytes")
        } else {
            Err("body ends inside a number")
        }
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, &'static str> {
        u32::try_from(self.u64()?).map_err(|_| "number does not fit in 32 bits")
    }

    /// A count of items that each take at least `min_item_bytes` bytes: refusing counts the
    /// remaining bytes cannot possibly hold is what keeps `Vec::with_capacity(count)` safe.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, &'static str> {
        let n = usize::try_from(self.u64()?).map_err(|_| "count does not fit in memory")?;
        match n.checked_mul(min_item_bytes) {
            Some(need) if need <= self.rest.len() => Ok(n),
            _ => Err("count is larger than the rest of the body could hold"),
        }
    }

    /// `len` raw bytes.
    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        if len > self.rest.len() {
            return Err("string runs past the end of the body");
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overflow() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_u64(&mut buf, v);
            let mut c = Cursor::new(&buf);
            assert_eq!(c.u64(), Ok(v));
            assert_eq!(c.remaining(), 0);
        }
        // 10th byte carrying more than the 64th bit.
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert!(c.u64().is_err());
        let mut c = Cursor::new(&[0x80; 11]);
        assert!(c.u64().is_err());
        let mut c = Cursor::new(&[0x80, 0x80]);
        assert!(c.u64().is_err());
        for v in [0, -1, 1, i64::MIN, i64::MAX, -(u32::MAX as i64)] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
