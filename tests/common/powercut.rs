//! What the crash tests share: a seeded RNG (a failing round replays by its seed) and the
//! power-cut model, in which a file's bytes on disk after the cut are a random mix of
//! what it held at its last sync (S) and what had been written by the cut (C).

#![allow(dead_code)]

/// A tiny deterministic RNG (xorshift64*), so a failing round can be replayed by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

/// The test's seed: `KMSFS_CRASH_SEED` to replay a failure, else from the clock.
pub fn seeded(test: &str) -> (u64, Rng) {
    let seed = std::env::var("KMSFS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ std::process::id() as u64
        });
    eprintln!("{test} seed {seed} (replay: KMSFS_CRASH_SEED={seed})");
    (seed, Rng(seed | 1))
}

/// Mixes the synced (`s`) and crash-time (`c`) contents of a backing file: each
/// `grain`-byte piece from one or the other (from `c` with `p_new` percent), the length
/// from one or the other.
pub fn mix(s: &[u8], c: &[u8], grain: usize, p_new: u64, rng: &mut Rng) -> Vec<u8> {
    let len = if rng.below(2) == 0 { s.len() } else { c.len() };
    let mut out = vec![0u8; len];
    for start in (0..len).step_by(grain) {
        let end = (start + grain).min(len);
        let src = if rng.below(100) < p_new { c } else { s };
        for (i, o) in out[start..end].iter_mut().enumerate() {
            *o = src.get(start + i).copied().unwrap_or(0);
        }
    }
    out
}

/// An ext4 filesystem on a loop device over an image file. The loop device writes through
/// the image file, so the image holds exactly what reached the "disk": a copy of it taken
/// while the filesystem is still mounted is the disk after a power cut at that instant
/// (dirty pages the kernel has not written back, up to 30 s of them, are not in it).
pub struct LoopDisk {
    pub image: std::path::PathBuf,
    pub at: std::path::PathBuf,
}

impl LoopDisk {
    /// A `mib`-MiB ext4 made in `image`, mounted at `at` (a directory made if missing).
    pub fn new(image: &std::path::Path, at: &std::path::Path, mib: u32) -> LoopDisk {
        LoopDisk::mount_image(
            image,
            at,
            &format!(
                "truncate -s {mib}m {i} && mkfs.ext4 -q -F {i}",
                i = image.display()
            ),
        )
    }

    /// The disk as a power cut now would leave it: a copy of the image, mounted at `at`
    /// (mounting replays ext4's journal, as the first boot after the cut would).
    pub fn cut(&self, image: &std::path::Path, at: &std::path::Path) -> LoopDisk {
        LoopDisk::mount_image(
            image,
            at,
            &format!(
                "cp --sparse=always {} {}",
                self.image.display(),
                image.display()
            ),
        )
    }

    fn mount_image(image: &std::path::Path, at: &std::path::Path, make: &str) -> LoopDisk {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{make} && mount -o loop {} {}",
                image.display(),
                at.display()
            ))
            .status()
            .unwrap();
        assert!(st.success(), "{make}: mount -o loop failed");
        LoopDisk {
            image: image.to_owned(),
            at: at.to_owned(),
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.at)
                .status();
        }
    }
}
