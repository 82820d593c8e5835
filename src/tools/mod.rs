//! The offline tools, which work on a volume's backing directory with no mount:
//! `kmsfs fsck` (checks every header and block), `kmsfs rewrap` (re-wraps every DEK under
//! another CMK or key version) and `kmsfs encrypt` (makes a volume from a plain tree); `walk` is the volume walker fsck and
//! rewrap share, `extents` where a backing file holds data.

pub mod encrypt;
pub mod extents;
pub mod fsck;
pub mod rewrap;
pub mod walk;
