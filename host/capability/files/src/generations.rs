//! A dataset's data as immutable generations behind one link, so readers
//! always see one complete upload and uploads never collide:
//!
//! - `<org>/<dataset>` is a symlink to `.generations/<dataset>/<gen>`; a new
//!   upload is written to `<gen>.partial`, renamed to `<gen>` when complete
//!   and fsynced, and made current by renaming a new link over the old one
//!   (one atomic `rename`): a reader resolves the link once per fetch and
//!   sees the old or the new generation whole, never a missing file;
//! - one upload per dataset at a time, across processes: an exclusive lock
//!   on `.generations/<dataset>/.lock` (a second upload gets 409), released
//!   by the kernel if the uploader dies;
//! - the generation an upload replaces is marked retired and removed once no
//!   fetch can still be reading it (after a grace period longer than a
//!   fetch's deadline); [`sweep`] at start removes what a crash left behind.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::upload::{create_private_dir, is_safe_name};
use silo_core::error::{Error, Result};

/// Where an org's generations live, beside its dataset links.
pub const GENERATIONS: &str = ".generations";
const LOCK: &str = ".lock";
const PARTIAL: &str = ".partial";
const RETIRED: &str = ".retired";

/// The directory holding the current data of `dataset` in `org_dir`: the
/// generation its link names, or a plain directory laid out by hand.
pub fn current(org_dir: &Path, dataset: &str) -> Result<PathBuf> {
    let missing = || Error::NotFound(format!("dataset `{dataset}` has no upload"));
    let link = org_dir.join(dataset);
    let meta = std::fs::symlink_metadata(&link).map_err(|_| missing())?;
    if meta.is_dir() {
        return Ok(link);
    }
    if !meta.file_type().is_symlink() {
        return Err(missing());
    }
    let target = std::fs::read_link(&link).map_err(|_| missing())?;
    // Only a link of our own making is followed: `.generations/<dataset>/<gen>`.
    let parts: Vec<_> = target.iter().filter_map(|p| p.to_str()).collect();
    match parts.as_slice() {
        [GENERATIONS, d, generation] if *d == dataset && is_safe_name(generation) => {
            Ok(org_dir.join(target))
        }
        _ => Err(Error::Internal(format!(
            "dataset `{dataset}` links somewhere other than its generations"
        ))),
    }
}

/// The upload lock of one dataset: held while a new generation is written
/// and published; released on drop or when the process dies.
#[derive(Debug)]
pub struct UploadLock {
    _file: File,
    dir: PathBuf,
}

/// Takes the upload lock of `dataset`, or says another upload holds it.
pub fn lock(org_dir: &Path, dataset: &str) -> Result<UploadLock> {
    let dir = org_dir.join(GENERATIONS).join(dataset);
    create_private_dir(&dir)?;
    let path = dir.join(LOCK);
    let file = private_file(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(UploadLock { _file: file, dir }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Conflict(format!(
            "another upload to dataset `{dataset}` is in progress; retry when it ends"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::Internal(format!("{}: {e}", path.display())))
        }
    }
}

impl UploadLock {
    /// A new, empty generation directory to write the upload into.
    pub fn begin(&self) -> Result<Partial> {
        let name = format!(
            "g{}-{}-{}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id(),
            super::upload::unique()
        );
        let dir = self.dir.join(format!("{name}{PARTIAL}"));
        create_private_dir(&dir)?;
        Ok(Partial { dir, name })
    }

    /// Makes `partial` (complete and fsynced) the dataset's data: renamed to
    /// its final name, then the dataset's link swapped to it in one rename.
    /// The generation it replaces is marked retired.
    pub fn publish(&self, org_dir: &Path, dataset: &str, partial: Partial) -> Result<()> {
        let io = |what: &Path, e: std::io::Error| {
            Error::Internal(format!("publishing {}: {e}", what.display()))
        };
        let done = self.dir.join(&partial.name);
        std::fs::rename(&partial.dir, &done).map_err(|e| io(&done, e))?;
        sync_dir(&self.dir)?;
        let link = org_dir.join(dataset);
        let old = match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => current(org_dir, dataset).ok(),
            Ok(m) if m.is_dir() => {
                // Data laid out before generations: becomes one, once.
                let moved = self.dir.join(format!("legacy-{}", super::upload::unique()));
                std::fs::rename(&link, &moved).map_err(|e| io(&link, e))?;
                Some(moved)
            }
            _ => None,
        };
        let target = Path::new(GENERATIONS).join(dataset).join(&partial.name);
        let fresh = org_dir.join(format!(".link-{dataset}-{}", super::upload::unique()));
        std::os::unix::fs::symlink(&target, &fresh).map_err(|e| io(&fresh, e))?;
        if let Err(e) = std::fs::rename(&fresh, &link) {
            let _ = std::fs::remove_file(&fresh);
            return Err(io(&link, e));
        }
        sync_dir(org_dir)?;
        if let Some(old) = old.and_then(|o| o.file_name().map(|n| self.dir.join(n))) {
            let marker = retired_marker(&old);
            if let Err(e) = private_file(&marker) {
                tracing::warn!("marking a replaced generation retired: {e}");
            }
        }
        drop(partial);
        Ok(())
    }

    /// Removes this dataset's leftovers: unfinished generations (the lock
    /// says no upload is writing one), and replaced generations retired
    /// longer than `grace` ago.
    pub fn sweep(&self, org_dir: &Path, dataset: &str, grace: Duration) {
        let current = current(org_dir, dataset)
            .ok()
            .and_then(|c| c.file_name().map(ToOwned::to_owned));
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let old = |path: &Path| {
            std::fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= grace)
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(text) = name.to_str() else { continue };
            if text == LOCK || text.ends_with(RETIRED) || Some(&name) == current.as_ref() {
                continue;
            }
            let path = entry.path();
            let remove = if text.ends_with(PARTIAL) {
                true
            } else {
                // A replaced generation: retired long enough ago (or, with no
                // marker because a crash came between, untouched that long).
                let marker = retired_marker(&path);
                if marker.exists() {
                    old(&marker)
                } else {
                    old(&path)
                }
            };
            if remove {
                let _ = std::fs::remove_dir_all(&path);
                let _ = std::fs::remove_file(retired_marker(&path));
            }
        }
        // Markers whose generation is gone.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if let Some(generation) = path
                    .to_str()
                    .and_then(|p| p.strip_suffix(RETIRED))
                    .map(PathBuf::from)
                    && !generation.exists()
                {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

/// A generation being written; removed if dropped before it is published.
#[derive(Debug)]
pub struct Partial {
    dir: PathBuf,
    name: String,
}

impl Partial {
    /// Where to write it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// At start: every dataset of every org under `root` swept of what a crash
/// or an interrupted upload left (see [`UploadLock::sweep`]); a dataset whose
/// upload is running elsewhere is left alone.
pub fn sweep(root: &Path, grace: Duration) {
    let Ok(orgs) = std::fs::read_dir(root) else {
        return;
    };
    for org in orgs.flatten() {
        let org_dir = org.path();
        let Some(name) = org.file_name().to_str().map(ToOwned::to_owned) else {
            continue;
        };
        if !is_safe_name(&name) || !org_dir.is_dir() {
            continue;
        }
        // Before generations, uploads staged and swapped here.
        if let Ok(entries) = std::fs::read_dir(&org_dir) {
            for entry in entries.flatten() {
                let n = entry.file_name();
                let n = n.to_string_lossy();
                if n.starts_with(".upload-") || n.starts_with(".replaced-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                } else if n.starts_with(".link-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let Ok(datasets) = std::fs::read_dir(org_dir.join(GENERATIONS)) else {
            continue;
        };
        for dataset in datasets.flatten() {
            let Some(d) = dataset.file_name().to_str().map(ToOwned::to_owned) else {
                continue;
            };
            if !is_safe_name(&d) {
                continue;
            }
            if let Ok(held) = lock(&org_dir, &d) {
                held.sweep(&org_dir, &d, grace);
            }
        }
    }
}

/// One dataset swept (see [`UploadLock::sweep`]) unless an upload to it is
/// running.
pub fn sweep_dataset(store: &super::FilesStore, dataset: &str, grace: Duration) {
    let org_dir = store.org_dir();
    if let Ok(held) = lock(&org_dir, dataset) {
        held.sweep(&org_dir, dataset, grace);
    }
}

fn retired_marker(generation: &Path) -> PathBuf {
    let mut name = generation.as_os_str().to_owned();
    name.push(RETIRED);
    PathBuf::from(name)
}

fn private_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))
}
