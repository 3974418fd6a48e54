//! Namespace path validation. Every path that enters the system goes through
//! [`components`] first, on the client and again on the master.

use crate::error::{ErrorCode, ErrorInfo};

/// Longest file name, in bytes (as in Linux's NAME_MAX).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest path, in bytes (as in Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// Splits an absolute path into its components, rejecting anything that is
/// not a plain absolute path: relative paths, `.` and `..`, empty components
/// (`//`), NUL bytes, names over [`MAX_NAME_BYTES`] and paths over
/// [`MAX_PATH_BYTES`]. `/` yields no components. A single trailing `/` is
/// accepted (`/a/` is `/a`).
pub fn components(path: &str) -> Result<Vec<&str>, ErrorInfo> {
    let bad = |why: &str| Err(ErrorInfo::new(ErrorCode::InvalidPath, format!("{path:?}: {why}")));
    if path.is_empty() {
        return bad("empty path");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("path longer than 4096 bytes");
    }
    if !path.starts_with('/') {
        return bad("path must be absolute");
    }
    if path.contains('\0') {
        return bad("path contains a NUL byte");
    }
    if path.contains("//") {
        return bad("empty path component");
    }
    let trimmed = if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path };
    let mut out = Vec::new();
    for name in trimmed[1..].split('/') {
        if trimmed.len() == 1 {
            break;
        }
        match name {
            "" => return bad("empty path component"),
            "." | ".." => return bad("`.` and `..` are not allowed"),
            n if n.len() > MAX_NAME_BYTES => return bad("a name is longer than 255 bytes"),
            n => out.push(n),
        }
    }
    Ok(out)
}

/// Validates a single file name (no `/`).
pub fn validate_name(name: &str) -> Result<(), ErrorInfo> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(ErrorInfo::new(ErrorCode::InvalidPath, format!("{name:?}: not a valid file name")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(ErrorInfo::new(ErrorCode::InvalidPath, "a name is longer than 255 bytes"));
    }
    Ok(())
}

/// Whether normalised `path` is `dir` or below it.
pub fn is_under(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && (dir == "/" || path.as_bytes().get(dir.len()) == Some(&b'/')))
}

/// The directory holding normalised `path` (`/` for `/` itself).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Joins components back into a normalised absolute path.
pub fn join(components: &[&str]) -> String {
    if components.is_empty() {
        return "/".to_string();
    }
    let mut s = String::new();
    for c in components {
        s.push('/');
        s.push_str(c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_absolute_paths() {
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(components("/a/b").unwrap(), vec!["a", "b"]);
        assert_eq!(components("/a/b/").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn rejects_bad_paths() {
        for p in ["", "a/b", "/a//b", "/a/../b", "/./a", "/a\0b", "//"] {
            let e = components(p).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidPath, "{p:?}");
        }
        let long_name = format!("/{}", "x".repeat(256));
        assert_eq!(components(&long_name).unwrap_err().code, ErrorCode::InvalidPath);
        let long_path = "/abc".repeat(1100);
        assert_eq!(components(&long_path).unwrap_err().code, ErrorCode::InvalidPath);
    }
}
