//! The file name an entry task carries from the directory listing to the core that copies it:
//! names up to [`INLINE`] bytes (with the NUL) are stored in the task itself, so listing and
//! queueing an entry costs no allocation; longer names go to the heap.

use std::ffi::{CStr, CString};
use std::ops::Deref;

/// The longest name (NUL included) kept inline. Most file names are far shorter; the task stays
/// small enough to move through the deques cheaply.
pub(crate) const INLINE: usize = 48;

/// An owned file name (`CStr`), inline when short.
pub(crate) enum Name {
    /// The name's bytes, NUL included, in the first `len` bytes of `bytes`.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A name longer than [`INLINE`] bytes.
    Heap(CString),
}

impl Name {
    /// An owned copy of `name`.
    pub(crate) fn new(name: &CStr) -> Name {
        let b = name.to_bytes_with_nul();
        if b.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            Name::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Name::Heap(name.to_owned())
        }
    }

    /// Whether the name is stored inline (no allocation).
    #[cfg(test)]
    fn is_inline(&self) -> bool {
        matches!(self, Name::Inline { .. })
    }
}

impl Deref for Name {
    type Target = CStr;

    fn deref(&self) -> &CStr {
        match self {
            Name::Inline { len, bytes } => CStr::from_bytes_with_nul(&bytes[..*len as usize])
                .expect("built from a CStr: one NUL, at the end"),
            Name::Heap(c) => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_inline_and_long_ones_on_the_heap() {
        for len in [0usize, 1, INLINE - 2, INLINE - 1, INLINE, 255] {
            let s = CString::new(vec![b'x'; len]).unwrap();
            let n = Name::new(&s);
            assert_eq!(&*n, s.as_c_str(), "length {len}");
            assert_eq!(n.is_inline(), len < INLINE, "length {len}");
        }
        // Any byte but NUL, as a Linux file name may hold.
        let odd = CString::new(vec![0xff, b'\n', 0x80, b'/']).unwrap();
        assert_eq!(&*Name::new(&odd), odd.as_c_str());
    }
}
