//! Recognising a kernel file: an arm64 Linux `Image` by its header (Linux
//! Documentation/arch/arm64/booting.rst, "Call the kernel image"), a compressed kernel the
//! hypervisor cannot boot (gzip, EFI zboot), or anything else as a kvm-unit-tests `.flat`.
//!
//! Header (64 bytes, little-endian fields): code0/code1 at 0, text_offset at 8, image_size at
//! 16, flags at 24, magic "ARM\x64" at 56.

/// The file format of a kernel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// An arm64 Linux `Image`: its header's text_offset and image_size (bytes of memory the
    /// image needs from its load address, BSS included).
    Linux {
        /// Offset of the image from a 2 MiB-aligned base.
        text_offset: u64,
        /// Bytes from the load address the kernel may use (at least the file size).
        image_size: u64,
    },
    /// Anything else: a kvm-unit-tests `.flat` (a raw, self-relocating binary).
    Flat,
}

impl Format {
    /// The name for logs and the report.
    pub fn name(self) -> &'static str {
        match self {
            Format::Linux { .. } => "linux",
            Format::Flat => "flat",
        }
    }
}

/// Why a kernel file is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ImageError {
    /// An arm64 Image whose header flags bit 0 says big-endian: the hypervisor enters guests
    /// little-endian (SCTLR_EL1.EE = 0) and parses little-endian headers only.
    BigEndian,
    /// A gzip stream (magic 1f 8b): e.g. Debian's `vmlinuz`; decompress it (`zcat`) first.
    Gzip,
    /// An EFI zboot image ("MZ" then "zimg" at offset 4): a compressed kernel that only an EFI
    /// loader unpacks; boot the plain `Image` instead.
    Zboot,
}

impl ImageError {
    /// A message for the user.
    pub fn message(self) -> &'static str {
        match self {
            ImageError::BigEndian => {
                "the kernel is a big-endian arm64 Image (header flags bit 0): only little-endian \
                 kernels are supported"
            }
            ImageError::Gzip => {
                "the kernel is gzip-compressed (magic 1f 8b): decompress it (zcat FILE > Image) \
                 and pass the arm64 Image"
            }
            ImageError::Zboot => {
                "the kernel is an EFI zboot image (\"zimg\"): it needs an EFI loader; pass the \
                 uncompressed arm64 Image"
            }
        }
    }
}

/// Offset of the arm64 Image header's magic "ARM\x64".
const IMAGE_MAGIC_OFFSET: usize = 56;
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
/// booting.rst: "Where image_size is zero, text_offset can be assumed to be 0x80000" (a kernel
/// before v3.17, whose text_offset's endianness was unspecified, so the field is not read).
pub const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// Header flags bit 0: kernel endianness, 1 = big-endian (booting.rst).
const FLAG_BE: u64 = 1;

fn le64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Recognises `kernel`: an arm64 Image by its header magic (image_size is at least the file
/// size, so BSS below the next file is never overwritten); a gzip stream or an EFI zboot image
/// is refused (booting it as a `.flat` would jump into compressed bytes); anything else is a
/// `.flat`.
pub fn detect(kernel: &[u8]) -> Result<Format, ImageError> {
    if kernel.starts_with(&[0x1f, 0x8b]) {
        return Err(ImageError::Gzip);
    }
    // EFI zboot (drivers/firmware/efi/libstub/zboot-header.S): the PE "MZ" then "zimg".
    if kernel.starts_with(b"MZ") && kernel.get(4..8) == Some(b"zimg") {
        return Err(ImageError::Zboot);
    }
    if kernel.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4) != Some(IMAGE_MAGIC) {
        return Ok(Format::Flat);
    }
    let size = kernel.len() as u64;
    // The magic at 56 means the whole 64-byte header is there.
    let (text_offset, image_size, flags) = (
        le64(kernel, 8).unwrap_or(0),
        le64(kernel, 16).unwrap_or(0),
        le64(kernel, 24).unwrap_or(0),
    );
    if image_size == 0 {
        // Pre-3.17: flags was reserved (0), text_offset is 0x80000 whatever the field says.
        return Ok(Format::Linux {
            text_offset: LEGACY_TEXT_OFFSET,
            image_size: size,
        });
    }
    if flags & FLAG_BE != 0 {
        return Err(ImageError::BigEndian);
    }
    Ok(Format::Linux {
        text_offset,
        image_size: image_size.max(size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn linux_header() {
        // A modern kernel: text_offset 0, image_size beyond the file (BSS), flags LE | 4K.
        assert_eq!(
            detect(&header(0, 0x200_0000, 0b1010)),
            Ok(Format::Linux {
                text_offset: 0,
                image_size: 0x200_0000
            })
        );
        // image_size below the file size: the file size wins.
        assert_eq!(
            detect(&header(0x1000, 16, 0)),
            Ok(Format::Linux {
                text_offset: 0x1000,
                image_size: 4096
            })
        );
    }

    #[test]
    fn legacy_header_text_offset_is_0x80000() {
        for t in [
            0,
            0x8_0000,
            0x1234,
            0x0000_0800_0000_0000, /* BE 0x80000 */
        ] {
            assert_eq!(
                detect(&header(t, 0, 0)),
                Ok(Format::Linux {
                    text_offset: 0x8_0000,
                    image_size: 4096
                }),
                "text_offset field {t:#x}"
            );
        }
    }

    #[test]
    fn big_endian_refused() {
        assert_eq!(
            detect(&header(0, 0x100_0000, 1)),
            Err(ImageError::BigEndian)
        );
    }

    #[test]
    fn compressed_refused() {
        let mut gz = vec![0x1f, 0x8b, 8, 0];
        gz.resize(128, 0);
        assert_eq!(detect(&gz), Err(ImageError::Gzip));
        let mut zboot = b"MZ\0\0zimg".to_vec();
        zboot.resize(128, 0);
        zboot[24..29].copy_from_slice(b"gzip\0");
        assert_eq!(detect(&zboot), Err(ImageError::Zboot));
        // A PE image that is not zboot (an EFI-stub Image has "MZ" and the arm64 magic).
        let mut efi = header(0, 0x100_0000, 0);
        efi[0..2].copy_from_slice(b"MZ");
        assert!(matches!(detect(&efi), Ok(Format::Linux { .. })));
    }

    #[test]
    fn anything_else_is_flat() {
        assert_eq!(detect(&[0u8; 4096]), Ok(Format::Flat));
        assert_eq!(detect(&[]), Ok(Format::Flat));
        assert_eq!(detect(b"ARM\x64"), Ok(Format::Flat));
    }
}
