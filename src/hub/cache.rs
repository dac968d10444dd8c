//! The Hub cache layout shared with the Python tools
//! (<https://huggingface.co/docs/huggingface_hub/guides/manage-cache>):
//!
//! ```text
//! {MODEL_CACHE_DIR}/models--{owner}--{name}/
//!   blobs/{identity}                  the bytes, verified (synced before they get this name)
//!   blobs/{identity}.incomplete       a download in progress: always a prefix of the blob
//!   snapshots/{commit}/{path}         relative symlink to ../../blobs/{identity}
//!   refs/{revision}                   the commit, no trailing newline
//! {MODEL_CACHE_DIR}/.locks/models--{owner}--{name}/{identity}.lock
//!                                     `flock`ed by whoever writes that blob
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::select::check_name;
use super::HubError;
use crate::domain::RepoId;

/// One repo's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    root: PathBuf,
}

/// An identity (ETag) becomes a file name: only letters, digits, `-`, `_` and `.` (not leading).
pub fn check_identity(identity: &str) -> Result<(), HubError> {
    let ok = !identity.is_empty()
        && identity.len() <= 128
        && !identity.starts_with('.')
        && identity
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HubError::Failed(format!(
            "the Hub gave an unusable file identity '{identity}'"
        )))
    }
}

/// A commit becomes a folder name: 1–64 ASCII letters and digits.
pub fn check_commit(commit: &str) -> Result<(), HubError> {
    if !commit.is_empty() && commit.len() <= 64 && commit.chars().all(|c| c.is_ascii_alphanumeric())
    {
        Ok(())
    } else {
        Err(HubError::Failed(format!(
            "the Hub gave an unusable commit '{commit}'"
        )))
    }
}

/// True for a sha256 in hex: the identity of an LFS file, which its bytes must hash to.
pub fn is_sha256(identity: &str) -> bool {
    is_hex(identity, 64)
}

/// True for a git blob sha1 in hex: the identity of a plain git file.
pub fn is_git_sha1(identity: &str) -> bool {
    is_hex(identity, 40)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit())
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo: &RepoId) -> Self {
        RepoCache {
            root: cache_dir.join(repo.cache_folder()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob(&self, identity: &str) -> PathBuf {
        self.blobs_dir().join(identity)
    }

    pub fn incomplete(&self, identity: &str) -> PathBuf {
        self.blobs_dir().join(format!("{identity}.incomplete"))
    }

    /// The lock file the Python tools take while they write this blob.
    pub fn lock_file(&self, identity: &str) -> PathBuf {
        let folder = self.root.file_name().unwrap_or_default();
        let cache_dir = self.root.parent().unwrap_or(&self.root);
        cache_dir
            .join(".locks")
            .join(folder)
            .join(format!("{identity}.lock"))
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// `snapshots/{commit}/{path}`, the path checked again so nothing lands outside.
    pub fn snapshot_file(&self, commit: &str, path: &str) -> Result<PathBuf, HubError> {
        check_commit(commit)?;
        check_name(path)?;
        Ok(self.snapshot_dir(commit).join(path))
    }

    /// Links `snapshots/{commit}/{path}` to its blob with a relative symlink, replacing any.
    pub fn link(&self, commit: &str, path: &str, identity: &str) -> Result<(), HubError> {
        check_identity(identity)?;
        let link = self.snapshot_file(commit, path)?;
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let depth = path.matches('/').count();
        let target = format!("{}../../blobs/{identity}", "../".repeat(depth));
        match std::fs::symlink_metadata(&link) {
            Ok(_) => std::fs::remove_file(&link)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        make_link(&target, &link, &self.blob(identity))?;
        Ok(())
    }

    /// The identity a snapshot link points at, if it is one of ours.
    pub fn linked_identity(&self, commit: &str, path: &str) -> Option<String> {
        let link = self.snapshot_file(commit, path).ok()?;
        let target = std::fs::read_link(link).ok()?;
        let name = target.file_name()?.to_str()?.to_string();
        check_identity(&name).ok().map(|_| name)
    }

    /// Writes `refs/{revision}` = the commit, without a newline. A revision that is itself the
    /// commit gets no ref, as in `huggingface_hub`.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(revision)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::read_to_string(&path).ok().as_deref() == Some(commit) {
            return Ok(());
        }
        let tmp = path.with_extension("millm-tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(commit.as_bytes())?;
        drop(file);
        rename_durably(&tmp, &path)?;
        Ok(())
    }

    /// `refs/{revision}`; a revision like `refs/pr/1` nests folders, as the Python client does.
    pub fn ref_path(&self, revision: &str) -> Result<PathBuf, HubError> {
        check_name(revision)
            .map_err(|_| HubError::Failed(format!("unusable revision name '{revision}'")))?;
        Ok(self.root.join("refs").join(revision))
    }
}

#[cfg(unix)]
fn make_link(target: &str, link: &Path, _blob: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn make_link(_target: &str, link: &Path, blob: &Path) -> io::Result<()> {
    // Without symlinks the Python client copies the blob too.
    std::fs::copy(blob, link).map(|_| ())
}

/// Renames a finished file into place so that a power loss cannot leave a name pointing at
/// bytes that never reached the disk: the file is synced before the rename, and its new folder
/// after it (the rename itself is an entry of that folder).
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    File::open(from)?.sync_all()?;
    std::fs::rename(from, to)?;
    sync_folder(to.parent().unwrap_or(Path::new(".")))
}

#[cfg(unix)]
fn sync_folder(folder: &Path) -> io::Result<()> {
    File::open(folder)?.sync_all()
}

#[cfg(not(unix))]
fn sync_folder(_folder: &Path) -> io::Result<()> {
    // Windows cannot open a folder as a file; NTFS journals the rename itself.
    Ok(())
}

/// Removes a file if it is there; returns its size when it was.
pub fn remove_if_present(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let len = if m.file_type().is_symlink() {
                0
            } else {
                m.len()
            };
            match std::fs::remove_file(path) {
                Ok(()) => len,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot remove: {e}");
                    0
                }
            }
        }
        Err(_) => 0,
    }
}

/// Removes `dir` and its parents up to (and including) `stop` while they are empty.
pub fn prune_empty(dir: &Path, stop: &Path) {
    let mut cur = dir.to_path_buf();
    loop {
        if std::fs::remove_dir(&cur).is_err() {
            return;
        }
        if cur == stop {
            return;
        }
        match cur.parent() {
            Some(p) if p.starts_with(stop) => cur = p.to_path_buf(),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_at_blobs_relatively() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(dir.path(), &RepoId::parse("o/n").unwrap());
        std::fs::create_dir_all(cache.blobs_dir()).unwrap();
        std::fs::write(cache.blob("abc"), b"x").unwrap();
        cache.link("c0ffee", "config.json", "abc").unwrap();
        let link = cache.snapshot_file("c0ffee", "config.json").unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../../blobs/abc")
        );
        assert_eq!(std::fs::read(&link).unwrap(), b"x");
        cache.link("c0ffee", "sub/x.json", "abc").unwrap();
        let nested = cache.snapshot_file("c0ffee", "sub/x.json").unwrap();
        assert_eq!(
            std::fs::read_link(&nested).unwrap(),
            Path::new("../../../blobs/abc")
        );
        assert_eq!(
            cache.linked_identity("c0ffee", "config.json").as_deref(),
            Some("abc")
        );
        cache.write_ref("main", "c0ffee").unwrap();
        assert_eq!(
            std::fs::read_to_string(cache.root().join("refs/main")).unwrap(),
            "c0ffee"
        );
        assert!(cache.snapshot_file("c0ffee", "../x").is_err());
        assert!(cache.link("c0ffee", "x", "../evil").is_err());
    }

    #[test]
    fn a_durable_rename_moves_the_whole_file_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("x.incomplete"), dir.path().join("x"));
        std::fs::write(&from, b"verified bytes").unwrap();
        rename_durably(&from, &to).unwrap();
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"verified bytes");

        // A file that cannot be synced or moved stays where it was, under its unverified name.
        let missing = dir.path().join("gone/x");
        std::fs::write(&from, b"more").unwrap();
        assert!(rename_durably(&from, &missing).is_err());
        assert_eq!(std::fs::read(&from).unwrap(), b"more");
        assert!(rename_durably(&dir.path().join("absent"), &to).is_err());
        assert_eq!(std::fs::read(&to).unwrap(), b"verified bytes");
    }
}
