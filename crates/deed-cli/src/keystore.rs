//! The local keystore: one file per key, `NAME.key`, holding the secret key as hex,
//! readable by the owner only.
//!
//! The folder is `$DEED_HOME/keys`, else `keys` under the platform's data directory
//! (`~/.local/share/deed/keys` on Linux). Keys are stored unencrypted, as the dev
//! tools of Ethereum clients do; protect the folder as you would an SSH key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use deed_types::{Address, SecretKey};

/// Where Deed keeps its local files: `$DEED_HOME`, else `deed` under the platform's
/// data directory.
pub fn deed_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("DEED_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match dirs::data_dir() {
        Some(d) => Ok(d.join("deed")),
        None => bail!("cannot find a data directory for the keystore; set DEED_HOME"),
    }
}

/// The keystore.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key's name (its file name without `.key`).
    pub name: String,
    /// Its address.
    pub address: Address,
}

impl Keystore {
    /// The keystore under [`deed_home`].
    pub fn open_default() -> Result<Keystore> {
        Ok(Keystore::at(deed_home()?.join("keys")))
    }

    /// A keystore in `dir` (created on first write).
    pub fn at(dir: impl Into<PathBuf>) -> Keystore {
        Keystore { dir: dir.into() }
    }

    /// The keystore's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.key")))
    }

    /// Stores `key` as `name`; refuses to overwrite an existing key.
    pub fn insert(&self, name: &str, key: &SecretKey) -> Result<KeyEntry> {
        let path = self.path(name)?;
        create_private_dir(&self.dir)?;
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = match opts.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(
                    "a key named `{name}` already exists in {}",
                    self.dir.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        };
        f.write_all(format!("{}\n", hex::encode(key.to_bytes())).as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(KeyEntry {
            name: name.to_owned(),
            address: key.address(),
        })
    }

    /// Loads the key called `name`.
    pub fn get(&self, name: &str) -> Result<SecretKey> {
        let path = self.path(name)?;
        if !path.is_file() {
            bail!(
                "no key named `{name}` in {} (see `deed keys list`)",
                self.dir.display()
            );
        }
        read_key_file(&path)
    }

    /// Every stored key, by name.
    pub fn list(&self) -> Result<Vec<KeyEntry>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.dir.display())),
        };
        let mut out = Vec::new();
        for entry in rd {
            let path = entry?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".key"))
            else {
                continue;
            };
            let key = read_key_file(&path)?;
            out.push(KeyEntry {
                name: name.to_owned(),
                address: key.address(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if !ok {
        bail!("bad key name `{name}`: use up to 64 letters, digits, `-`, `_` or `.`");
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}

/// Parses a secret key from hex text (64 digits, `0x` optional).
pub fn parse_hex_key(text: &str) -> Result<SecretKey> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(t, &mut bytes)
        .map_err(|_| anyhow::anyhow!("a secret key is 64 hex digits"))?;
    SecretKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("not a valid secret key: {e}"))
}

/// Reads a key file holding hex text.
pub fn read_key_file(path: &Path) -> Result<SecretKey> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_hex_key(&text).with_context(|| format!("bad key file {}", path.display()))
}

/// A fresh random key.
pub fn generate() -> Result<SecretKey> {
    loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
        // Rejection sampling: the odds of an invalid scalar are about 2^-128.
        if let Ok(k) = SecretKey::from_bytes(&bytes) {
            return Ok(k);
        }
    }
}

/// Resolves `--key`: a path to a key file, 64 hex digits, or a keystore name.
pub fn resolve(store: &Keystore, spec: &str) -> Result<SecretKey> {
    let path = Path::new(spec);
    if path.is_file() {
        return read_key_file(path);
    }
    let t = spec.strip_prefix("0x").unwrap_or(spec);
    if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        return parse_hex_key(spec);
    }
    store.get(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_list_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::at(dir.path().join("keys"));
        assert!(ks.list().unwrap().is_empty());
        let k = generate().unwrap();
        let e = ks.insert("alice", &k).unwrap();
        assert_eq!(e.address, k.address());
        assert_eq!(ks.get("alice").unwrap().to_bytes(), k.to_bytes());
        assert!(ks.insert("alice", &generate().unwrap()).is_err());
        assert_eq!(ks.list().unwrap(), vec![e]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("keys/alice.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(ks
            .get("bob")
            .unwrap_err()
            .to_string()
            .contains("no key named"));
        assert!(ks.insert("../evil", &k).is_err());
    }

    #[test]
    fn resolve_accepts_name_hex_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::at(dir.path().join("keys"));
        let k = SecretKey::from_seed(b"resolve");
        ks.insert("k", &k).unwrap();
        let hex_text = hex::encode(k.to_bytes());
        assert_eq!(resolve(&ks, "k").unwrap().address(), k.address());
        assert_eq!(resolve(&ks, &hex_text).unwrap().address(), k.address());
        assert_eq!(
            resolve(&ks, &format!("0x{hex_text}")).unwrap().address(),
            k.address()
        );
        let file = dir.path().join("key.txt");
        fs::write(&file, format!("0x{hex_text}\n")).unwrap();
        assert_eq!(
            resolve(&ks, file.to_str().unwrap()).unwrap().address(),
            k.address()
        );
        assert!(resolve(&ks, "nobody").is_err());
        assert!(parse_hex_key(&"0".repeat(64)).is_err());
    }
}
