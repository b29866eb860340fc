//! File I/O behind a small trait, so tests can inject write and sync failures and simulate
//! power loss in-process.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

mod powerloss;
pub use powerloss::{
    CrashReport, OpKind, OpOutcome, OpRecord, PowerLossVfs, SimStats, SyncMutation, SyncSite,
    SECTOR_BYTES,
};

/// An open file: positional reads and writes, durability, truncation.
pub trait LogFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length.
    fn size(&self) -> io::Result<u64>;

    /// Maps the file's current length into memory for reading, when this kind of file can be
    /// mapped (`None`: read it with [`LogFile::read_at`]). Only segment files are mapped, and
    /// only their committed records are read through a map (see `Segment::mapped`).
    fn map(&self) -> Option<io::Result<memmap2::Mmap>> {
        None
    }

    /// Writes the `len` bytes at `offset` (written already) out to the disk and waits for
    /// them, without flushing the disk's cache or the file's metadata: a rewrite calls it
    /// after each buffer, so that its dirty pages never pile up into one long burst of disk
    /// writes that appends' `fdatasync`s would queue behind. A no-op where there is no such
    /// call (the data is still made durable by the rewrite's `sync_data`).
    fn write_out(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    /// Gives the disk blocks of the `len` bytes at `offset` back to the file system, the
    /// file's length unchanged (those bytes then read as zeros, through a map too). A no-op
    /// where the file system cannot (the blocks then go back when the file is closed).
    fn free_range(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// The file system operations the log uses.
pub trait Vfs: Send + Sync {
    /// Opens a file for reading and writing; creates it when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>>;
    /// Makes a directory's entries durable (after create, rename, remove).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Renames a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Creates one directory (its parent must exist); fails with `AlreadyExists` when there
    /// is one. Like a file's creation, it is durable only once its parent is synced.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdVfs;

struct StdFile(File);

/// An open file of the real file system as a [`LogFile`].
pub(crate) fn std_file(file: File) -> Arc<dyn LogFile> {
    Arc::new(StdFile(file))
}

impl LogFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn write_out(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: a plain system call on a file descriptor this value owns (open for its
        // lifetime), with integer arguments and no pointers.
        let r = unsafe {
            libc::sync_file_range(
                self.0.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        done_or_unsupported(r)
    }

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn free_range(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: a plain system call on a file descriptor this value owns (open for its
        // lifetime), with integer arguments and no pointers.
        let r = unsafe {
            libc::fallocate(
                self.0.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        done_or_unsupported(r)
    }

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn map(&self) -> Option<io::Result<memmap2::Mmap>> {
        // SAFETY: the map is only ever read at the bytes of committed records: a read looks up
        // a record's place in the index (which holds committed records only) and decodes
        // exactly the length that record declares, all of it below the segment's committed
        // end. Strata never rewrites or cuts a committed byte while the store is open: records
        // are append-only, the writer writes only past the committed end, sealing cuts only the
        // zeros preallocated past the last record, and recovery cuts a torn tail before any
        // read maps the file. The data directory's lock file keeps a second Strata process out.
        // The slices handed to the decoder may reach past a record's end, over bytes the writer
        // is still writing or (in a map made before sealing) past the file's new end; those
        // bytes are never read, which is the usual condition for reading a memmap2 map of a
        // file that changes. Linux keeps a map and `pwrite`s to the same file coherent (one
        // page cache), so records written after the map was made read correctly through it.
        // A file changed underneath a running store by something else breaks the store's
        // contract whatever the read path; with a map it can end the process (SIGBUS), as a
        // failing disk can.
        Some(unsafe { memmap2::Mmap::map(&self.0) })
    }
}

/// The outcome of a system call that only helps (`sync_file_range`, `fallocate`): an error
/// saying the file system or kernel does not have it is no error.
#[cfg(target_os = "linux")]
fn done_or_unsupported(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL | libc::ESPIPE) => Ok(()),
        _ => Err(e),
    }
}

/// Maps a sealed segment's index file for reading.
#[allow(unsafe_code)]
pub(crate) fn map_index_file(file: &File) -> io::Result<memmap2::Mmap> {
    // SAFETY: a segment index file is written whole (temp file, fsync, rename) and never
    // written again in place or cut: Strata only renames another file over its name or
    // removes it, and either leaves an existing map of it intact. Open checks a file through
    // a map of it (its CRC, its structure, its stream postings against its entries) and then
    // reads its stream postings through the same map; a map opened for reads (after its
    // length and the file's header and CRC, read with `pread`, are compared with those
    // checked bytes) is read at entries checked on open (or encoded by the writer) and at
    // type and category postings, each block checked as it is read. As with
    // segment files, a file changed underneath a running
    // store by something else breaks the store's contract; with a map it can end the process
    // (SIGBUS), as a failing disk can, opening included (where `pread` would give an error,
    // and the segment be scanned).
    unsafe { memmap2::Mmap::map(file) }
}

/// Asks the CPU to start bringing in the cache line holding `bytes[at]` (and to walk the page
/// tables for it), without waiting: a read that visits scattered places of a map (a long
/// stream's entries and records) asks a few places ahead, so their memory latencies overlap.
/// Nothing happens where `at` is out of bounds, or off x86-64.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = bytes.get(at) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint: it reads nothing the program sees and never faults
        // (the CPU drops it where the page is not mapped); the address is in bounds anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(b).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// A file's bytes: read into memory, or a read-only map of it ([`map_index_file`]).
pub(crate) enum FileBytes {
    Read(Vec<u8>),
    Map(memmap2::Mmap),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Read(b) => b,
            FileBytes::Map(m) => m,
        }
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(bytes: Vec<u8>) -> Self {
        FileBytes::Read(bytes)
    }
}

/// Whether bytes `at..at + len` of `map` are in memory: reading them then waits for no disk.
/// Asks the kernel (`mincore`) for the pages they lie in; `false` when they lie outside the
/// map or the kernel does not answer.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn map_resident(map: &memmap2::Mmap, at: usize, len: usize) -> bool {
    static PAGE_BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf only reads a system value.
    let page = *PAGE_BYTES.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    });
    let Some(end) = at.checked_add(len).filter(|&e| e <= map.len() && len > 0) else {
        return false;
    };
    let start = at / page * page;
    let pages = end.div_ceil(page) - start / page;
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping starting at a page boundary (mmap returns one), and
    // `start..start + pages * page` lies within its pages (its last page is mapped whole);
    // mincore writes one byte per page into `vec`, which has `pages` of them.
    let r = unsafe {
        libc::mincore(
            map.as_ptr().add(start) as *mut libc::c_void,
            pages * page,
            vec.as_mut_ptr(),
        )
    };
    r == 0 && vec.iter().all(|b| b & 1 == 1)
}

/// Without Linux, nothing is known to be in memory.
#[cfg(not(target_os = "linux"))]
pub(crate) fn map_resident(_map: &memmap2::Mmap, _at: usize, _len: usize) -> bool {
    false
}

/// Reads `buf.len()` bytes at `at` of `file` only if they are in the page cache
/// (`preadv2` with `RWF_NOWAIT`): `Ok(false)` when the read would wait for the disk (or
/// read less), and nothing is known of `buf` then.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn read_at_nowait(file: &File, buf: &mut [u8], at: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let Ok(offset) = libc::off_t::try_from(at) else {
        return Ok(false);
    };
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, valid for writes of its length for the call, and the
    // descriptor is `file`'s, open for the call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Ok(false),
            _ => Err(e),
        };
    }
    Ok(n as usize == buf.len())
}

/// Without Linux, no read is known not to wait.
#[cfg(not(target_os = "linux"))]
pub(crate) fn read_at_nowait(_file: &File, _buf: &mut [u8], _at: u64) -> io::Result<bool> {
    Ok(false)
}

impl Vfs for StdVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(create)
            .truncate(false);
        #[cfg(target_os = "linux")]
        {
            // Reads need not update the access time: it saves every `pread` the kernel's
            // atime check. Only the file's owner may ask, so others open it plainly.
            use std::os::unix::fs::OpenOptionsExt;
            let mut no_atime = options.clone();
            no_atime.custom_flags(libc::O_NOATIME);
            match no_atime.open(path) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                other => return other.map(|f| Arc::new(StdFile(f)) as Arc<dyn LogFile>),
            }
        }
        Ok(Arc::new(StdFile(options.open(path)?)))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
}

/// A [`Vfs`] that fails on command: after a number of successful writes or syncs, every
/// further write or sync fails with an I/O error, as a full or failing disk would. Used by
/// the fail-stop tests.
#[derive(Clone, Default)]
pub struct FaultyVfs {
    state: Arc<FaultState>,
}

#[derive(Default)]
struct FaultState {
    writes_left: AtomicU64,
    syncs_left: AtomicU64,
    armed: AtomicBool,
    faults: AtomicU64,
}

impl FaultyVfs {
    /// A file system that works until armed.
    pub fn new() -> Self {
        Self::default()
    }
    /// From now on, allow `writes` more writes and `syncs` more syncs, then fail each one.
    pub fn fail_after(&self, writes: u64, syncs: u64) {
        self.state.writes_left.store(writes, Ordering::SeqCst);
        self.state.syncs_left.store(syncs, Ordering::SeqCst);
        self.state.armed.store(true, Ordering::SeqCst);
    }
    /// Stops failing.
    pub fn heal(&self) {
        self.state.armed.store(false, Ordering::SeqCst);
    }
    /// How many operations were failed so far.
    pub fn faults(&self) -> u64 {
        self.state.faults.load(Ordering::SeqCst)
    }
}

impl FaultState {
    fn check(&self, counter: &AtomicU64, what: &str) -> io::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let ok = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if ok {
            Ok(())
        } else {
            self.faults.fetch_add(1, Ordering::SeqCst);
            Err(io::Error::other(format!("injected {what} failure")))
        }
    }
}

struct FaultyFile {
    inner: Arc<dyn LogFile>,
    state: Arc<FaultState>,
}

impl LogFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.state.check(&self.state.writes_left, "write")?;
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.state.check(&self.state.syncs_left, "fsync")?;
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.check(&self.state.writes_left, "truncate")?;
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl Vfs for FaultyVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(FaultyFile {
            inner: StdVfs.open(path, create)?,
            state: self.state.clone(),
        }))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.state
            .check(&self.state.syncs_left, "directory fsync")?;
        StdVfs.sync_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdVfs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdVfs.remove(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        StdVfs.create_dir(path)
    }
}

/// Bytes a large write (a rewritten segment, an index file) hands the disk at a time before
/// waiting for them (see [`LogFile::write_out`]).
pub const WRITE_OUT_CHUNK_BYTES: usize = 1 << 20;

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename, directory fsync.
/// The bytes go out [`WRITE_OUT_CHUNK_BYTES`] at a time, so that appends' `fdatasync`s never
/// wait behind the whole file.
pub fn write_file_atomic(vfs: &dyn Vfs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("tmp");
    let f = vfs.open(&tmp, true)?;
    f.set_len(0)?;
    let mut at = 0usize;
    for chunk in bytes.chunks(WRITE_OUT_CHUNK_BYTES) {
        f.write_all_at(chunk, at as u64)?;
        f.write_out(at as u64, chunk.len() as u64)?;
        at += chunk.len();
    }
    f.sync_data()?;
    drop(f);
    vfs.rename(&tmp, path)?;
    vfs.sync_dir(dir)
}

/// Creates `path` and whichever of its parents are missing, through `vfs`, durably: after
/// creating a directory it fsyncs the parent, whose new entry would otherwise be lost with
/// the power (and with it everything written below, however well synced).
pub fn create_dir_all(vfs: &dyn Vfs, path: &Path) -> io::Result<()> {
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dir_all(vfs, parent)?;
    match vfs.create_dir(path) {
        Ok(()) => vfs.sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lowers the calling thread's CPU and I/O priority to the least (nice 19, best-effort I/O
/// class at its lowest level): work that can wait (a scavenge) then takes what appends and
/// reads leave, and runs at full speed on an idle machine. A no-op where the system has no
/// per-thread priorities; failures are ignored (the work runs at normal priority).
#[allow(unsafe_code)]
pub(crate) fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id, with no pointers.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        // ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE, 7)).
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_BE: libc::c_long = 2;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid as libc::c_long,
            (IOPRIO_CLASS_BE << 13) | 7,
        );
    }
}
