//! The replies: each handler's [`FsResult`] answered once, an error through [`errno`]
//! (fuser's `examples/simple.rs` ends every handler in this one `match`).

#![allow(clippy::wildcard_imports)]

use super::*;

impl KmsFs {
    pub(super) fn reply_entry(&self, reply: ReplyEntry, r: FsResult<FileAttr>) {
        match r {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub(super) fn reply_attr(&self, reply: ReplyAttr, r: FsResult<FileAttr>) {
        match r {
            Ok(a) => reply.attr(&self.ttl, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

pub(super) fn reply_empty(reply: ReplyEmpty, r: FsResult<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn reply_data(reply: ReplyData, r: FsResult<Vec<u8>>) {
    match r {
        Ok(d) => reply.data(&d),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn reply_written(reply: ReplyWrite, r: FsResult<u32>) {
    match r {
        Ok(n) => reply.written(n),
        Err(e) => reply.error(errno(&e)),
    }
}

/// A new file or directory handle.
pub(super) fn reply_opened(reply: ReplyOpen, r: FsResult<u64>) {
    match r {
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
        Err(e) => reply.error(errno(&e)),
    }
}

/// An xattr's value, or its length where `size` is 0 (the caller asks how much room).
pub(super) fn reply_xattr(reply: ReplyXattr, size: u32, r: FsResult<Vec<u8>>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(&e)),
    }
}
