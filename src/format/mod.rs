//! The on-disk file format (docs/FORMAT.md, "Volume format"): file header codec,
//! block sealing and the pure offset/size arithmetic. No I/O here.
//!
//! ```text
//! backing file = header (header_size bytes) ‖ block 0 ‖ block 1 ‖ …   (empty file: 0 bytes)
//! block        = nonce (24) ‖ ciphertext (≤ block_size) ‖ tag (16)
//! ```

pub mod aead;

use std::fmt;

use aead::{Derived, IntegrityError, XaesKey, NONCE_LEN, TAG_LEN};

/// Magic at the start of every file header.
pub const HEADER_MAGIC: &[u8; 8] = b"KMSFSHDR";
/// The only header version written and read so far.
pub const HEADER_VERSION: u16 = 1;
/// Bytes before the two slots: magic, version, flags, header size, file id.
pub const HEADER_PREFIX_LEN: usize = 8 + 2 + 2 + 4 + 16;
/// Bytes a slot spends on its own framing: generation (4), blob length (2), checksum (16).
pub const SLOT_OVERHEAD: usize = 4 + 2 + 16;
/// Smallest header size a volume may choose.
pub const MIN_HEADER_SIZE: u32 = 512;
/// Default header size.
pub const DEFAULT_HEADER_SIZE: u32 = 1024;
/// Default plaintext block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Bytes a stored block adds to its plaintext.
pub const BLOCK_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Length of a file id.
pub const FILE_ID_LEN: usize = 16;
/// The volume feature that binds "this is the file's last block" into every block's
/// associated data, so that a file cut at a block boundary is detected
/// (docs/FORMAT.md, "Blocks"; docs/THREAT-MODEL.md). New volumes have it.
pub const FEATURE_FINAL: &str = "content-final-v1";

/// A file's random 128-bit id: salt of its content key and part of every block's AD.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub [u8; FILE_ID_LEN]);

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", aead::hex(&self.0))
    }
}

/// A block number within a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockNo(pub u64);

/// Why bytes are not a valid header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Shorter or longer than the volume's header size.
    #[error("header has {got} bytes, the volume's header size is {want}")]
    Length {
        /// Bytes seen.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The first 8 bytes are not `KMSFSHDR`.
    #[error("bad header magic")]
    Magic,
    /// A version this build does not read.
    #[error("unknown header version {0}")]
    Version(u16),
    /// Flag bits this build does not know.
    #[error("unknown header flags {0:#06x}")]
    Flags(u16),
    /// The header's own size field disagrees with the volume config.
    #[error("header says size {0}, the volume says otherwise")]
    SizeField(u32),
    /// The all-zero file id is never written.
    #[error("all-zero file id")]
    ZeroFileId,
    /// Neither slot holds a valid wrapped DEK.
    #[error("no valid DEK slot (both checksums fail or both empty)")]
    NoSlot,
}

/// Volume geometry: everything the offset math needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Plaintext bytes per block.
    pub block_size: u64,
    /// Bytes of the file header.
    pub header_size: u64,
}

impl Geometry {
    /// Stored bytes per full block.
    pub fn stored_block(&self) -> u64 {
        self.block_size + BLOCK_OVERHEAD
    }

    /// Largest blob a header slot can hold.
    #[cfg(test)]
    pub fn max_blob(&self) -> usize {
        slot_len(self.header_size as usize) - SLOT_OVERHEAD
    }

    /// Plaintext size of a backing file of `backing` bytes, or `None` when that
    /// length is impossible (inside the header, or a last block shorter than its overhead).
    pub fn plain_size(&self, backing: u64) -> Option<u64> {
        if backing == 0 {
            return Some(0);
        }
        let rest = backing.checked_sub(self.header_size)?;
        let full = rest / self.stored_block();
        let rem = rest % self.stored_block();
        if rem != 0 && rem <= BLOCK_OVERHEAD {
            return None;
        }
        let last = rem.saturating_sub(BLOCK_OVERHEAD);
        full.checked_mul(self.block_size)?.checked_add(last)
    }

    /// Plaintext size when it is defined; for an impossible length, the whole blocks plus
    /// one byte, so that a read of the torn tail reaches it and fails (EIO) instead of the
    /// file silently looking shorter.
    pub fn plain_size_lossy(&self, backing: u64) -> u64 {
        self.plain_size(backing).unwrap_or_else(|| {
            let rest = backing.saturating_sub(self.header_size);
            (rest / self.stored_block()) * self.block_size + 1
        })
    }

    /// Backing size for a plaintext size (0 → 0). `None` on overflow (EFBIG).
    pub fn backing_size(&self, plain: u64) -> Option<u64> {
        if plain == 0 {
            return Some(0);
        }
        let full = plain / self.block_size;
        let rem = plain % self.block_size;
        let mut n = self
            .header_size
            .checked_add(full.checked_mul(self.stored_block())?)?;
        if rem != 0 {
            n = n.checked_add(rem + BLOCK_OVERHEAD)?;
        }
        // Keep it representable as off_t.
        if n > i64::MAX as u64 {
            return None;
        }
        Some(n)
    }

    /// The last block of a backing file of `backing` bytes (a torn last block counts),
    /// `None` for an empty file or a header alone.
    pub fn last_block(&self, backing: u64) -> Option<BlockNo> {
        let rest = backing.saturating_sub(self.header_size);
        let n = rest.div_ceil(self.stored_block());
        n.checked_sub(1).map(BlockNo)
    }

    /// Backing offset where block `b` starts. `None` on overflow.
    pub fn block_offset(&self, b: BlockNo) -> Option<u64> {
        self.header_size
            .checked_add(b.0.checked_mul(self.stored_block())?)
    }
}

fn slot_len(header_size: usize) -> usize {
    (header_size - HEADER_PREFIX_LEN) / 2
}

/// The associated data of block `b` of file `id`: file id ‖ block number (u64 BE), and
/// on a volume with [`FEATURE_FINAL`] one more byte, 1 on the file's last block, else 0.
/// Returns the buffer and the length used.
pub fn block_ad(id: &FileId, b: BlockNo, fin: Option<bool>) -> ([u8; FILE_ID_LEN + 9], usize) {
    let mut ad = [0u8; FILE_ID_LEN + 9];
    ad[..FILE_ID_LEN].copy_from_slice(&id.0);
    ad[FILE_ID_LEN..FILE_ID_LEN + 8].copy_from_slice(&b.0.to_be_bytes());
    match fin {
        None => (ad, FILE_ID_LEN + 8),
        Some(last) => {
            ad[FILE_ID_LEN + 8] = u8::from(last);
            (ad, FILE_ID_LEN + 9)
        }
    }
}

/// Why a stored block did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFault {
    /// It fails authentication: changed, moved, from another file, or torn.
    Tag,
    /// The file's last block authenticates, but as a block that is not last: the file was
    /// cut at a block boundary, or a crash interrupted an append or a truncate
    /// ([`FEATURE_FINAL`] only).
    NotFinal,
    /// The file's last block is a hole, which a file with [`FEATURE_FINAL`] never ends in:
    /// cut and padded with zeros, or an append whose data a power cut lost.
    HoleAtEnd,
}

impl From<IntegrityError> for BlockFault {
    fn from(_: IntegrityError) -> Self {
        BlockFault::Tag
    }
}

/// The HKDF info string of content keys: covers format version and block size.
pub fn content_key_label(block_size: u64) -> Vec<u8> {
    format!("kmsfs v1 content key xaes-256-gcm block={block_size}").into_bytes()
}

/// A file's content key: `HKDF-SHA256[salt = file id, info = label](DEK)`.
pub struct ContentKey {
    xaes: XaesKey,
    /// The file id this key belongs to.
    pub file_id: FileId,
    /// Whether blocks carry the final-block flag ([`FEATURE_FINAL`]).
    final_flag: bool,
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentKey")
            .field("file_id", &self.file_id)
            .field("final_flag", &self.final_flag)
            .finish_non_exhaustive()
    }
}

impl ContentKey {
    /// Derives the content key of file `id` from `dek`, for blocks without the final-block
    /// flag (see [`ContentKey::with_final_flag`]).
    pub fn derive(dek: &[u8], id: FileId, block_size: u64) -> Self {
        let k = aead::hkdf_sha256(dek, &id.0, &content_key_label(block_size));
        ContentKey {
            xaes: XaesKey::new(&k),
            file_id: id,
            final_flag: false,
        }
    }

    /// This key sealing and opening blocks with the final-block flag in their associated
    /// data (a volume with [`FEATURE_FINAL`]) when `on`.
    pub fn with_final_flag(mut self, on: bool) -> Self {
        self.final_flag = on;
        self
    }

    /// Whether this key's blocks carry the final-block flag.
    pub fn final_flag(&self) -> bool {
        self.final_flag
    }

    /// The flag byte of the associated data: `None` without the feature.
    fn fin(&self, last: bool) -> Option<bool> {
        self.final_flag.then_some(last)
    }

    /// Seals `plain` as block `b` (the file's last block when `last`) with the given
    /// nonce, appending `nonce ‖ ct ‖ tag` to `out`.
    pub fn seal_block_with_nonce(
        &self,
        b: BlockNo,
        last: bool,
        nonce: &[u8; NONCE_LEN],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), IntegrityError> {
        self.seal_into(&mut Derived::default(), b, last, nonce, plain, out)
    }

    fn seal_into(
        &self,
        cache: &mut Derived,
        b: BlockNo,
        last: bool,
        nonce: &[u8; NONCE_LEN],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), IntegrityError> {
        let start = out.len();
        out.extend_from_slice(nonce);
        out.extend_from_slice(plain);
        let (ad, n) = block_ad(&self.file_id, b, self.fin(last));
        let tag = self
            .xaes
            .seal_cached(cache, nonce, &ad[..n], &mut out[start + NONCE_LEN..])?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// A sealer for the blocks of one request (docs/FORMAT.md, "AEAD bound"): they share
    /// one random nonce prefix, so one XAES key derivation, and one CSPRNG call; their
    /// GCM nonces are a random base plus a counter, distinct within the request.
    pub fn sealer(&self) -> Result<BlockSealer<'_>, IntegrityError> {
        let mut nonce = [0u8; NONCE_LEN];
        aead::random(&mut nonce)?;
        Ok(BlockSealer {
            key: self,
            nonce,
            cache: Derived::default(),
        })
    }

    /// Seals `plain` as block `b` (the file's last block when `last`) under a fresh random
    /// nonce, appending to `out`.
    pub fn seal_block(
        &self,
        b: BlockNo,
        last: bool,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), IntegrityError> {
        let mut nonce = [0u8; NONCE_LEN];
        aead::random(&mut nonce)?;
        self.seal_block_with_nonce(b, last, &nonce, plain, out)
    }

    /// Opens stored block `b` into `out` (appended); `last` says whether it is the file's
    /// last block. An all-zero stored block is a hole and reads as zeros, except as the
    /// last block of a file with the final-block flag. A stored block of ≤ 40 bytes that
    /// is not all zero fails.
    ///
    /// With the final-block flag (docs/FORMAT.md, "Blocks"), the last block must open
    /// as final; a block before it opens as not final, or else as final: the trace of an
    /// append interrupted before it re-sealed the block it grew past, which holds
    /// intact data, and which lets no one cut the file (a cut needs its new last block
    /// to say final).
    pub fn open_block(
        &self,
        b: BlockNo,
        last: bool,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BlockFault> {
        self.open_block_cached(&mut Derived::default(), b, last, stored, out)
    }

    /// [`ContentKey::open_block`] for consecutive blocks: `cache` keeps the derived key
    /// while their nonces share a prefix (blocks sealed by one request do).
    pub fn open_block_cached(
        &self,
        cache: &mut Derived,
        b: BlockNo,
        last: bool,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BlockFault> {
        if stored.iter().all(|&x| x == 0) {
            if last && self.final_flag {
                return Err(BlockFault::HoleAtEnd);
            }
            let n = stored.len().saturating_sub(BLOCK_OVERHEAD as usize);
            out.resize(out.len() + n, 0);
            return Ok(());
        }
        if stored.len() <= BLOCK_OVERHEAD as usize {
            return Err(BlockFault::Tag);
        }
        if !self.final_flag {
            return Ok(self.open_as(cache, b, None, stored, out)?);
        }
        match self.open_as(cache, b, Some(last), stored, out) {
            Ok(()) => Ok(()),
            Err(_) if last => match self.open_as(cache, b, Some(false), stored, out) {
                // Intact, but not the end the writer left: say so, return nothing.
                Ok(()) => {
                    out.truncate(out.len() - (stored.len() - BLOCK_OVERHEAD as usize));
                    Err(BlockFault::NotFinal)
                }
                Err(_) => Err(BlockFault::Tag),
            },
            Err(_) => Ok(self.open_as(cache, b, Some(true), stored, out)?),
        }
    }

    /// Opens `stored` under one choice of associated data; on failure `out` is as it was.
    fn open_as(
        &self,
        cache: &mut Derived,
        b: BlockNo,
        fin: Option<bool>,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), IntegrityError> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&stored[..NONCE_LEN]);
        let ct_end = stored.len() - TAG_LEN;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&stored[ct_end..]);
        let start = out.len();
        out.extend_from_slice(&stored[NONCE_LEN..ct_end]);
        let (ad, n) = block_ad(&self.file_id, b, fin);
        let r = self
            .xaes
            .open_cached(cache, &nonce, &ad[..n], &mut out[start..], &tag);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }
}

/// Seals the blocks of one request (see [`ContentKey::sealer`]).
pub struct BlockSealer<'a> {
    key: &'a ContentKey,
    /// The next nonce: the request's random prefix ‖ random base + blocks sealed so far.
    nonce: [u8; NONCE_LEN],
    cache: Derived,
}

impl BlockSealer<'_> {
    /// Seals `plain` as block `b` (the file's last block when `last`), appending
    /// `nonce ‖ ct ‖ tag` to `out`.
    pub fn seal(
        &mut self,
        b: BlockNo,
        last: bool,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), IntegrityError> {
        let nonce = self.nonce;
        self.key
            .seal_into(&mut self.cache, b, last, &nonce, plain, out)?;
        // The low 64 bits of the GCM nonce count up (wrapping): distinct for 2^64 blocks.
        let mut low = [0u8; 8];
        low.copy_from_slice(&self.nonce[NONCE_LEN - 8..]);
        let next = u64::from_be_bytes(low).wrapping_add(1);
        self.nonce[NONCE_LEN - 8..].copy_from_slice(&next.to_be_bytes());
        Ok(())
    }
}

/// A parsed file header.
#[derive(Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// The file's id.
    pub file_id: FileId,
    /// Generation of the active slot.
    pub generation: u32,
    /// The wrapped DEK, exactly as the KMS returned it.
    pub wrapped_dek: Vec<u8>,
}

impl fmt::Debug for FileHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileHeader")
            .field("file_id", &self.file_id)
            .field("generation", &self.generation)
            .field("wrapped_dek_len", &self.wrapped_dek.len())
            .finish()
    }
}

fn slot_checksum(prefix: &[u8], index: u8, gen: u32, blob: &[u8]) -> [u8; 16] {
    let mut m = Vec::with_capacity(prefix.len() + 1 + 4 + 2 + blob.len() + 16);
    m.extend_from_slice(b"kmsfs slot");
    m.extend_from_slice(prefix);
    m.push(index);
    m.extend_from_slice(&gen.to_be_bytes());
    m.extend_from_slice(&(blob.len() as u16).to_be_bytes());
    m.extend_from_slice(blob);
    let d = aead::sha256(&m);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A bounds-checked reader over untrusted bytes (rustls `Reader` style).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl FileHeader {
    /// Encodes into exactly `header_size` bytes; the blob goes into slot 0 (slot 1 empty).
    ///
    /// # Errors
    /// `None` when the blob does not fit a slot.
    pub fn encode(&self, header_size: u32) -> Option<Vec<u8>> {
        let hs = header_size as usize;
        let sl = slot_len(hs);
        if self.wrapped_dek.is_empty() || self.wrapped_dek.len() > sl - SLOT_OVERHEAD {
            return None;
        }
        let mut out = Vec::with_capacity(hs);
        out.extend_from_slice(HEADER_MAGIC);
        out.extend_from_slice(&HEADER_VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&header_size.to_be_bytes());
        out.extend_from_slice(&self.file_id.0);
        let prefix = out.clone();
        out.extend_from_slice(&encode_slot(
            &prefix,
            0,
            self.generation,
            &self.wrapped_dek,
            sl,
        ));
        out.resize(hs, 0); // slot 1 empty, plus any odd padding byte
        Some(out)
    }

    /// Parses a header of exactly `header_size` bytes.
    pub fn parse(buf: &[u8], header_size: u32) -> Result<Self, HeaderError> {
        let hs = header_size as usize;
        if buf.len() != hs || hs < MIN_HEADER_SIZE as usize {
            return Err(HeaderError::Length {
                got: buf.len(),
                want: hs,
            });
        }
        let mut r = Reader { buf, pos: 0 };
        let short = HeaderError::Length {
            got: buf.len(),
            want: hs,
        };
        if r.take(8).ok_or(short.clone())? != HEADER_MAGIC {
            return Err(HeaderError::Magic);
        }
        let v = r.u16().ok_or(short.clone())?;
        if v != HEADER_VERSION {
            return Err(HeaderError::Version(v));
        }
        let flags = r.u16().ok_or(short.clone())?;
        if flags != 0 {
            return Err(HeaderError::Flags(flags));
        }
        let size = r.u32().ok_or(short.clone())?;
        if size != header_size {
            return Err(HeaderError::SizeField(size));
        }
        let mut id = [0u8; FILE_ID_LEN];
        id.copy_from_slice(r.take(FILE_ID_LEN).ok_or(short.clone())?);
        if id == [0u8; FILE_ID_LEN] {
            return Err(HeaderError::ZeroFileId);
        }
        let prefix = &buf[..HEADER_PREFIX_LEN];
        let sl = slot_len(hs);
        let mut best: Option<(u32, Vec<u8>)> = None;
        for i in 0..2u8 {
            let slot = r.take(sl).ok_or(short.clone())?;
            if let Some((gen, blob)) = parse_slot(prefix, i, slot) {
                if best.as_ref().is_none_or(|(g, _)| gen > *g) {
                    best = Some((gen, blob));
                }
            }
        }
        // The odd trailing byte (if any) must be zero: no hidden data.
        if buf[r.pos..].iter().any(|&b| b != 0) {
            return Err(HeaderError::NoSlot);
        }
        let (generation, wrapped_dek) = best.ok_or(HeaderError::NoSlot)?;
        Ok(FileHeader {
            file_id: FileId(id),
            generation,
            wrapped_dek,
        })
    }
}

/// What one of a header's two slots holds (for `kmsfs fsck`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// All zero: never written.
    Empty,
    /// Checksum verifies.
    Valid {
        /// The slot's generation.
        generation: u32,
        /// Its wrapped DEK.
        wrapped_dek: Vec<u8>,
    },
    /// Written, but its checksum or framing fails (torn or tampered).
    Corrupt,
}

/// The state of both slots of a `header_size`-byte header; `None` when `buf` has the
/// wrong length. Checks only the slots: [`FileHeader::parse`] checks the prefix.
pub fn slot_states(buf: &[u8], header_size: u32) -> Option<[SlotState; 2]> {
    let hs = header_size as usize;
    if buf.len() != hs || hs < MIN_HEADER_SIZE as usize {
        return None;
    }
    let prefix = &buf[..HEADER_PREFIX_LEN];
    let sl = slot_len(hs);
    let state = |i: u8| {
        let start = HEADER_PREFIX_LEN + i as usize * sl;
        let slot = &buf[start..start + sl];
        if slot.iter().all(|&b| b == 0) {
            return SlotState::Empty;
        }
        match parse_slot(prefix, i, slot) {
            Some((generation, wrapped_dek)) => SlotState::Valid {
                generation,
                wrapped_dek,
            },
            None => SlotState::Corrupt,
        }
    };
    Some([state(0), state(1)])
}

/// The write that re-points a valid header at `blob` (for `kmsfs rewrap`): the backing
/// offset of the *inactive* slot and its new bytes, with generation = active + 1. The
/// active slot is left as it is, so a torn write of the returned bytes loses nothing.
/// `None` when `buf` is not a valid header, the blob does not fit a slot or the
/// generation would overflow.
pub fn next_slot(buf: &[u8], header_size: u32, blob: &[u8]) -> Option<(u64, Vec<u8>, u32)> {
    let active = FileHeader::parse(buf, header_size).ok()?;
    let states = slot_states(buf, header_size)?;
    let hs = header_size as usize;
    let sl = slot_len(hs);
    if blob.is_empty() || blob.len() > sl - SLOT_OVERHEAD {
        return None;
    }
    // `parse` picks the first of two valid slots with equal generations.
    let active_index = states.iter().position(
        |s| matches!(s, SlotState::Valid { generation, .. } if *generation == active.generation),
    )?;
    let index = 1 - active_index;
    let gen = active.generation.checked_add(1)?;
    let prefix = &buf[..HEADER_PREFIX_LEN];
    let bytes = encode_slot(prefix, index as u8, gen, blob, sl);
    Some(((HEADER_PREFIX_LEN + index * sl) as u64, bytes, gen))
}

fn encode_slot(prefix: &[u8], index: u8, gen: u32, blob: &[u8], sl: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(sl);
    s.extend_from_slice(&gen.to_be_bytes());
    s.extend_from_slice(&(blob.len() as u16).to_be_bytes());
    s.extend_from_slice(blob);
    s.resize(sl - 16, 0);
    s.extend_from_slice(&slot_checksum(prefix, index, gen, blob));
    s
}

/// A slot: `gen u32 ‖ len u16 ‖ blob ‖ zero padding ‖ checksum[16]`. Empty or invalid → None.
fn parse_slot(prefix: &[u8], index: u8, slot: &[u8]) -> Option<(u32, Vec<u8>)> {
    let mut r = Reader { buf: slot, pos: 0 };
    let gen = r.u32()?;
    let len = r.u16()? as usize;
    if len == 0 || len > slot.len() - SLOT_OVERHEAD {
        return None;
    }
    let blob = r.take(len)?;
    let pad = r.take(slot.len() - 16 - r.pos)?;
    if pad.iter().any(|&b| b != 0) {
        return None;
    }
    let sum = r.take(16)?;
    if sum != slot_checksum(prefix, index, gen, blob) {
        return None;
    }
    Some((gen, blob.to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::aead::hex;
    use proptest::prelude::*;

    const G: Geometry = Geometry {
        block_size: 4096,
        header_size: 1024,
    };

    #[test]
    fn sizes_table() {
        // (plaintext, backing) pairs, docs/FORMAT.md "Sizes".
        let table = [
            (0u64, 0u64),
            (1, 1024 + 41),
            (4095, 1024 + 4095 + 40),
            (4096, 1024 + 4136),
            (4097, 1024 + 4136 + 41),
            (10 * 4096, 1024 + 10 * 4136),
        ];
        for (p, b) in table {
            assert_eq!(G.backing_size(p), Some(b), "plain {p}");
            assert_eq!(G.plain_size(b), Some(p), "backing {b}");
        }
        // Impossible lengths.
        for b in [1, 1023, 1024 + 40, 1024 + 4136 + 1, 1024 + 4136 + 40] {
            assert_eq!(G.plain_size(b), None, "backing {b}");
        }
        assert_eq!(G.plain_size(1024), Some(0)); // header only: a file being created
        assert_eq!(G.backing_size(u64::MAX), None);
        assert_eq!(G.backing_size(i64::MAX as u64), None);
        assert_eq!(G.max_blob(), (1024 - 32) / 2 - 22);
    }

    proptest! {
        #[test]
        fn size_roundtrip(p in 0u64..(1u64 << 50)) {
            let b = G.backing_size(p).unwrap();
            prop_assert_eq!(G.plain_size(b), Some(p));
        }

        #[test]
        fn header_roundtrip(id in any::<[u8; 16]>(), gen in any::<u32>(),
                            blob in proptest::collection::vec(any::<u8>(), 1..474)) {
            prop_assume!(id != [0; 16]);
            let h = FileHeader { file_id: FileId(id), generation: gen, wrapped_dek: blob };
            let bytes = h.encode(1024).unwrap();
            prop_assert_eq!(bytes.len(), 1024);
            prop_assert_eq!(FileHeader::parse(&bytes, 1024).unwrap(), h);
        }

        #[test]
        fn header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = FileHeader::parse(&bytes, 1024);
        }

        #[test]
        fn block_flip_any_byte_fails(pos in 0usize..(4096 + 40), bit in 0u8..8) {
            let k = ContentKey::derive(&[5; 32], FileId([6; 16]), 4096);
            let mut stored = Vec::new();
            k.seal_block(BlockNo(3), false, &[0x5a; 4096], &mut stored).unwrap();
            stored[pos] ^= 1 << bit;
            prop_assert!(k.open_block(BlockNo(3), false, &stored, &mut Vec::new()).is_err());
        }
    }

    fn vector_header() -> FileHeader {
        FileHeader {
            file_id: FileId(*b"0123456789abcdef"),
            generation: 1,
            wrapped_dek: b"wrapped-dek-blob".to_vec(),
        }
    }

    #[test]
    fn header_rejects_tampering_and_keeps_the_other_slot() {
        let h = vector_header();
        let bytes = h.encode(1024).unwrap();
        // Any flip in the prefix or in slot 0 fails (slot 1 is empty).
        for i in [0, 8, 10, 12, 16, 33, 40, 100, 500] {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(FileHeader::parse(&b, 1024).is_err(), "flip at {i}");
        }
        // Short, long and wrong-size input.
        assert!(FileHeader::parse(&bytes[..1023], 1024).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(FileHeader::parse(&long, 1024).is_err());
        assert!(FileHeader::parse(&bytes, 2048).is_err());
        // A second slot with a higher generation wins; a torn one falls back.
        let mut two = bytes.clone();
        let prefix = bytes[..HEADER_PREFIX_LEN].to_vec();
        let sl = slot_len(1024);
        let s1 = encode_slot(&prefix, 1, 2, b"rewrapped", sl);
        two[HEADER_PREFIX_LEN + sl..HEADER_PREFIX_LEN + 2 * sl].copy_from_slice(&s1);
        let p = FileHeader::parse(&two, 1024).unwrap();
        assert_eq!(
            (p.generation, p.wrapped_dek.as_slice()),
            (2, &b"rewrapped"[..])
        );
        two[HEADER_PREFIX_LEN + sl + 7] ^= 1; // tear slot 1
        let p = FileHeader::parse(&two, 1024).unwrap();
        assert_eq!(p, h);
    }

    #[test]
    fn next_slot_alternates_and_survives_a_torn_write() {
        let h = vector_header();
        let mut bytes = h.encode(1024).unwrap();
        for (round, want_index) in [(2u32, 1usize), (3, 0), (4, 1)] {
            let blob = format!("blob-{round}").into_bytes();
            let (off, slot, gen) = next_slot(&bytes, 1024, &blob).unwrap();
            assert_eq!(gen, round);
            assert_eq!(
                off as usize,
                HEADER_PREFIX_LEN + want_index * slot_len(1024)
            );
            // Torn: the first half written only. The old slot still carries the file.
            let mut torn = bytes.clone();
            let half = slot.len() / 2;
            torn[off as usize..off as usize + half].copy_from_slice(&slot[..half]);
            assert_eq!(
                FileHeader::parse(&torn, 1024).unwrap().generation,
                round - 1
            );
            bytes[off as usize..off as usize + slot.len()].copy_from_slice(&slot);
            let p = FileHeader::parse(&bytes, 1024).unwrap();
            assert_eq!(
                (p.generation, p.wrapped_dek, p.file_id),
                (round, blob, h.file_id)
            );
        }
        assert!(next_slot(&bytes, 1024, &[]).is_none());
        assert!(next_slot(&bytes, 1024, &[1; 600]).is_none());
        assert!(next_slot(&[0u8; 1024], 1024, b"x").is_none());
    }

    /// The vectors printed in docs/FORMAT.md.
    #[test]
    fn a_request_shares_one_nonce_prefix_and_opens_with_one_cache() {
        let k = ContentKey::derive(&[3; 32], FileId([4; 16]), 4096);
        let mut sealer = k.sealer().unwrap();
        let mut out = Vec::new();
        for b in 0..3 {
            sealer
                .seal(BlockNo(b), false, &[b as u8; 100], &mut out)
                .unwrap();
        }
        // Another request in between: another prefix.
        let mut other = Vec::new();
        k.seal_block(BlockNo(9), false, b"other", &mut other)
            .unwrap();
        let blocks: Vec<&[u8]> = out.chunks(140).collect();
        let nonces: Vec<&[u8]> = blocks.iter().map(|c| &c[..NONCE_LEN]).collect();
        assert!(nonces.iter().all(|n| n[..12] == nonces[0][..12]));
        assert!(nonces[0] != nonces[1] && nonces[1] != nonces[2] && nonces[0] != nonces[2]);
        assert_ne!(other[..12], nonces[0][..12]);
        // One cache across both requests, in any order, opens everything.
        let mut cache = Derived::default();
        let mut plain = Vec::new();
        for (b, c) in [
            (0, blocks[0]),
            (9, &other[..]),
            (1, blocks[1]),
            (2, blocks[2]),
        ] {
            plain.clear();
            k.open_block_cached(&mut cache, BlockNo(b), false, c, &mut plain)
                .unwrap();
        }
        assert_eq!(plain, [2u8; 100]);
        // The cache does not let a block pass under another block number.
        assert!(k
            .open_block_cached(&mut cache, BlockNo(5), false, blocks[2], &mut plain)
            .is_err());
    }

    #[test]
    fn format_md_vectors() {
        let h = vector_header();
        let bytes = h.encode(1024).unwrap();
        assert_eq!(
            hex(&bytes[..80]),
            "4b4d534653484452000100000000040030313233343536373839616263646566\
             000000010010777261707065642d64656b2d626c6f6200000000000000000000\
             00000000000000000000000000000000"
        );
        assert_eq!(
            hex(&bytes[HEADER_PREFIX_LEN + slot_len(1024) - 16..HEADER_PREFIX_LEN + slot_len(1024)]),
            "f4a4831638e83a09760db6ee89f3dec1"
        );
        let dek = [0x42u8; 32];
        let key = aead::hkdf_sha256(&dek, b"0123456789abcdef", &content_key_label(4096));
        assert_eq!(
            hex(&key[..]),
            "8eaaad189ace8f17301df176db6cfdedb66ecdd078b81056af0ca51c2a9708ab"
        );
        let k = ContentKey::derive(&dek, FileId(*b"0123456789abcdef"), 4096);
        let mut out = Vec::new();
        k.seal_block_with_nonce(BlockNo(1), false, &[0x11; 24], b"hello, kmsfs", &mut out)
            .unwrap();
        assert_eq!(
            hex(&out),
            "111111111111111111111111111111111111111111111111\
             e14498198693a6004f0d73714d5c36377f9e419f92d4a81ac5136744"
        );
        let mut back = Vec::new();
        k.open_block(BlockNo(1), false, &out, &mut back).unwrap();
        assert_eq!(back, b"hello, kmsfs");
        assert!(k
            .open_block(BlockNo(2), false, &out, &mut Vec::new())
            .is_err());
        let other = ContentKey::derive(&dek, FileId(*b"0123456789abcdeF"), 4096);
        assert!(other
            .open_block(BlockNo(1), false, &out, &mut Vec::new())
            .is_err());
        // A hole.
        let mut z = Vec::new();
        k.open_block(BlockNo(0), false, &[0u8; 4136], &mut z)
            .unwrap();
        assert_eq!(z, vec![0u8; 4096]);
    }

    /// The final-block flag (docs/FORMAT.md, "Blocks"): a last block must say so, a block
    /// before it may say either, and the vector printed in FORMAT.md.
    #[test]
    fn final_flag_rules_and_vector() {
        let dek = [0x42u8; 32];
        let id = FileId(*b"0123456789abcdef");
        let k = ContentKey::derive(&dek, id, 4096).with_final_flag(true);
        let seal = |b: u64, last: bool| {
            let mut out = Vec::new();
            k.seal_block_with_nonce(BlockNo(b), last, &[0x11; 24], b"hello, kmsfs", &mut out)
                .unwrap();
            out
        };
        let (fin, mid) = (seal(1, true), seal(1, false));
        assert_eq!(
            hex(&fin),
            "111111111111111111111111111111111111111111111111\
             e14498198693a6004f0d73715905152e7401f03d9f4acc8eeab5ef3c"
        );
        let open = |stored: &[u8], last: bool| {
            let mut out = Vec::new();
            k.open_block(BlockNo(1), last, stored, &mut out)
                .map(|()| out)
        };
        assert_eq!(open(&fin, true).unwrap(), b"hello, kmsfs");
        assert_eq!(open(&mid, false).unwrap(), b"hello, kmsfs");
        // A block sealed as last, read where the file goes on: an append that did not
        // re-seal it; accepted.
        assert_eq!(open(&fin, false).unwrap(), b"hello, kmsfs");
        // A block sealed as not last, read as the file's end: the file was cut.
        assert_eq!(open(&mid, true), Err(BlockFault::NotFinal));
        // A hole may be anywhere but at the end.
        assert_eq!(open(&[0u8; 4136], true), Err(BlockFault::HoleAtEnd));
        assert_eq!(open(&[0u8; 4136], false).unwrap(), vec![0u8; 4096]);
        let mut bad = fin.clone();
        bad[30] ^= 1;
        assert_eq!(open(&bad, true), Err(BlockFault::Tag));
        assert_eq!(open(&bad, false), Err(BlockFault::Tag));
        // Neither kind opens under the version 1 associated data, and back.
        let v1 = ContentKey::derive(&dek, id, 4096);
        for stored in [&fin, &mid] {
            assert!(v1
                .open_block(BlockNo(1), true, stored, &mut Vec::new())
                .is_err());
        }
        let mut old = Vec::new();
        v1.seal_block(BlockNo(1), true, b"v1", &mut old).unwrap();
        assert!(k
            .open_block(BlockNo(1), false, &old, &mut Vec::new())
            .is_err());
    }
}
