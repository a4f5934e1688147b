//! CRC-32C (Castagnoli), table driven: the checksum of every record.

#[allow(clippy::indexing_slicing)] // const evaluation: out of range fails the build
const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// CRC-32C of `data`.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        let idx = ((c ^ u32::from(b)) & 0xFF) as usize;
        c = (c >> 8) ^ TABLE.get(idx).copied().unwrap_or(0);
    }
    !c
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        // the standard check value of CRC-32C
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
