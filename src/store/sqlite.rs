//! A SQLite `DATABASE_URL` made ready to open: the file it names is created when missing, with
//! its folders, as for the default database. Every form sqlx reads is accepted (`sqlite:x.db`,
//! `sqlite://x.db`, `sqlite:///abs/x.db`, `sqlite:/abs/x.db`, a query such as `?mode=rwc`), and
//! a URL naming a folder (an existing one, or a path ending in `/`) means `millm.db` in it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::StoreError;

/// The file name used when the URL names a folder.
const FILE_IN_FOLDER: &str = "millm.db";

/// What sqlx percent-decodes in the file part: everything that would end it (`?`, `#`) or be
/// read as an escape (`%`), and what a URL may not hold as is.
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A SQLite URL naming a file, taken apart.
#[derive(Debug, PartialEq, Eq)]
struct FileUrl {
    /// The file or folder the URL names, decoded.
    path: PathBuf,
    /// True when the URL's path ends in `/`: a folder even if it does not exist yet.
    folder: bool,
    /// `mode`, if given: `ro` and `rw` never create the file, `rwc` (the default here) does.
    mode: Option<String>,
    /// The other query parameters, in order.
    params: Vec<(String, String)>,
}

/// The URL to open: for a SQLite file, the file resolved (a folder means `millm.db` in it) and,
/// unless `mode` is `ro` or `rw`, its folders created and `mode=rwc` set. Other URLs (in-memory
/// SQLite, PostgreSQL) come back unchanged.
pub(super) fn prepare(url: &str) -> Result<Cow<'_, str>, StoreError> {
    let Some(mut target) = parse(url) else {
        return Ok(Cow::Borrowed(url));
    };
    if target.folder || target.path.is_dir() {
        target.path.push(FILE_IN_FOLDER);
        target.folder = false;
    }
    if target.creates() {
        if let Some(folder) = target.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| StoreError::SqliteFolder {
                path: folder.display().to_string(),
                source,
            })?;
        }
        target.mode = Some("rwc".into());
    }
    Ok(Cow::Owned(target.url()))
}

/// Takes a `sqlite:` URL apart as sqlx does; `None` for an in-memory database or another scheme.
fn parse(url: &str) -> Option<FileUrl> {
    // sqlx strips `sqlite://` first, then `sqlite:`; the file part ends at the first `?`.
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut mode = None;
    let mut params = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key == "mode" {
            mode = Some(value.into_owned());
        } else {
            params.push((key.into_owned(), value.into_owned()));
        }
    }
    if file.is_empty() || file == ":memory:" || mode.as_deref() == Some("memory") {
        return None;
    }
    let decoded = percent_decode_str(file).decode_utf8().ok()?;
    Some(FileUrl {
        path: PathBuf::from(decoded.as_ref()),
        folder: decoded.ends_with('/'),
        mode,
        params,
    })
}

impl FileUrl {
    /// True unless the URL asks to open an existing file only (`mode=ro` or `mode=rw`).
    fn creates(&self) -> bool {
        !matches!(self.mode.as_deref(), Some("ro" | "rw"))
    }

    /// The URL again, in a form that sqlx and the `url` crate read back to the same file:
    /// `sqlite:///abs` for an absolute path (the third `/` starts it) and `sqlite:rel` for a
    /// relative one (no `//`, so its first folder cannot be taken for a host).
    fn url(&self) -> String {
        let path = self.path.to_string_lossy();
        let encoded = utf8_percent_encode(&path, PATH_ESCAPES);
        let mut url = if Path::new(path.as_ref()).is_absolute() {
            format!("sqlite://{encoded}")
        } else {
            format!("sqlite:{encoded}")
        };
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(mode) = &self.mode {
            query.append_pair("mode", mode);
        }
        for (key, value) in &self.params {
            query.append_pair(key, value);
        }
        let query = query.finish();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;

    /// The file sqlx opens for `url`, read as the pool reads it (through the `Any` driver's URL).
    fn opened(url: &str) -> (PathBuf, String) {
        let any: sqlx::any::AnyConnectOptions = url.parse().expect("a URL");
        let options = SqliteConnectOptions::from_url(&any.database_url).expect("a SQLite URL");
        let lossy = options.to_url_lossy().to_string();
        (options.get_filename().to_path_buf(), lossy)
    }

    #[test]
    fn every_form_of_a_sqlite_url_names_the_same_file() {
        for (url, file) in [
            ("sqlite:/srv/millm/new.db", "/srv/millm/new.db"),
            ("sqlite:///srv/millm/new.db", "/srv/millm/new.db"),
            ("sqlite:///srv/millm/new.db?mode=rwc", "/srv/millm/new.db"),
            ("sqlite://data/new.db", "data/new.db"),
            ("sqlite:data/new.db?mode=rw", "data/new.db"),
            ("sqlite:/srv/my%20models/x.db", "/srv/my models/x.db"),
        ] {
            assert_eq!(parse(url).unwrap().path, Path::new(file), "{url}");
        }
        assert_eq!(parse("sqlite:/srv/millm/new.db").unwrap().mode, None);
        assert_eq!(
            parse("sqlite:x.db?mode=ro&cache=shared").unwrap(),
            FileUrl {
                path: "x.db".into(),
                folder: false,
                mode: Some("ro".into()),
                params: vec![("cache".into(), "shared".into())],
            }
        );
        assert!(parse("sqlite:/srv/millm/").unwrap().folder);
    }

    #[test]
    fn in_memory_and_postgres_urls_are_left_alone() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://?mode=memory",
            "sqlite:",
            "postgres://u@h/db",
        ] {
            assert!(parse(url).is_none(), "{url}");
            assert_eq!(prepare(url).unwrap(), url);
        }
    }

    #[test]
    fn the_rebuilt_url_opens_the_named_file_and_creates_it() {
        for path in [
            "/srv/plain/x.db",
            "/srv/odd #?%& name/x y.db",
            "relative/dir/x.db",
            "./here.db",
        ] {
            let target = FileUrl {
                path: path.into(),
                folder: false,
                mode: Some("rwc".into()),
                params: vec![("cache".into(), "private".into())],
            };
            let url = target.url();
            let (file, lossy) = opened(&url);
            assert_eq!(file, Path::new(path), "{url}");
            assert!(
                lossy.contains("mode=rwc"),
                "{url} creates the file: {lossy}"
            );
            assert!(
                lossy.contains("cache=private"),
                "{url} keeps its parameters"
            );
        }
    }

    #[test]
    fn prepare_creates_the_folders_of_a_new_file_or_a_folder_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b/new.db");
        let url = prepare(&format!("sqlite:{}", file.display()))
            .unwrap()
            .into_owned();
        assert!(dir.path().join("a/b").is_dir());
        assert_eq!(opened(&url).0, file);

        // A folder URL (with a trailing `/`, or naming a folder that exists) means millm.db in it.
        let folder = dir.path().join("c/d/");
        let url = prepare(&format!("sqlite://{}/", folder.display()))
            .unwrap()
            .into_owned();
        assert!(folder.is_dir());
        assert_eq!(opened(&url).0, folder.join(FILE_IN_FOLDER));
        let url = prepare(&format!("sqlite:{}", dir.path().join("a").display()))
            .unwrap()
            .into_owned();
        assert_eq!(opened(&url).0, dir.path().join("a").join(FILE_IN_FOLDER));

        // `mode=rw` opens an existing file only: nothing is created for it.
        let url = prepare(&format!(
            "sqlite:{}?mode=rw",
            dir.path().join("e/x.db").display()
        ))
        .unwrap()
        .into_owned();
        assert!(!dir.path().join("e").exists());
        assert!(opened(&url).1.contains("mode=rw&"), "{url}");
    }
}
