//! Reading the files a user names: only regular files, only up to a size, and directories
//! walked for scenario files in a stable order.
//!
//! A FIFO would block `read` forever and `/dev/zero` would grow without end, so anything
//! that is not a regular file (after following symlinks) is refused before it is read, and
//! a regular file is read only up to its maximum.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The bytes of the regular file at `path`, refused (`InvalidInput`) if it is anything else
/// or longer than `max_bytes`.
pub fn read_regular(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    check_regular(&std::fs::metadata(path)?)?;
    let file = std::fs::File::open(path)?;
    // The file opened is the one checked, even if the name was swapped in between.
    let metadata = file.metadata()?;
    check_regular(&metadata)?;
    if metadata.len() > max_bytes {
        return Err(too_long(max_bytes));
    }
    let mut bytes = Vec::new();
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_long(max_bytes));
    }
    Ok(bytes)
}

fn too_long(max_bytes: u64) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("longer than the maximum of {max_bytes} bytes"))
}

fn check_regular(metadata: &std::fs::Metadata) -> io::Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    let what = file_kind(&metadata.file_type());
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({what})")))
}

fn file_kind(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() { "a directory" } else { "not a file" }
}

/// The scenario files `paths` name: a file as given, a directory walked for `*.toml` files,
/// each directory's files in sorted path order. Symlinks to directories are not followed
/// inside a walk (no loops); a symlink named on the command line is.
pub fn scenario_files(paths: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if std::fs::metadata(path).is_ok_and(|metadata| metadata.is_dir()) {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(&path, found)?;
        } else if path.extension().is_some_and(|extension| extension == "toml")
            && std::fs::metadata(&path).is_ok_and(|metadata| metadata.is_file())
        {
            found.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_refused_and_a_long_file_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_regular(dir.path(), 10).unwrap_err();
        assert_eq!(error.to_string(), "not a regular file (a directory)");
        let file = dir.path().join("x");
        std::fs::write(&file, "0123456789A").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap_err().to_string(), "longer than the maximum of 10 bytes");
        assert_eq!(read_regular(&file, 11).unwrap(), b"0123456789A");
    }

    #[cfg(unix)]
    #[test]
    fn dev_zero_is_refused_without_reading() {
        let error = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(error.to_string(), "not a regular file (a character device)");
    }

    #[test]
    fn directories_are_walked_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b/z.toml", "b/a.toml", "a.toml", "b/notes.md", "c/d/e.toml"] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let files = scenario_files(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|file| file.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.toml", "b/a.toml", "b/z.toml", "c/d/e.toml"]);
    }
}
