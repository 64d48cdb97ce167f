//! The local keystore: one file per key, encrypted at rest.
//!
//! The folder is `$DEED_HOME/keys`, else `keys` under the platform's data directory
//! (`~/.local/share/deed/keys` on Linux), readable by the owner only. A key is
//! `NAME.json` in the Ethereum keystore v3 format (Web3 Secret Storage: scrypt,
//! AES-128-CTR, a keccak-256 MAC), so files move to and from geth, foundry's `cast
//! wallet` and other Ethereum tools. New keys are written with [`KdfCost::LIGHT`]
//! (scrypt n = 2^13, r = 8, p = 1: about 8 MiB and a few tens of milliseconds per
//! unlock, the "light" setting of geth and of the `eth-keystore` crate), so that
//! every signing command stays quick; [`KdfCost::STANDARD`] (n = 2^18) is geth's
//! default and costs 32 times more. Any cost can be read.
//!
//! Files are decrypted by the `eth-keystore` crate (scrypt or PBKDF2), after this
//! module checked every field a malformed file could use to make it fail
//! (parameter sizes, lengths, an absurd scrypt cost). Encryption composes the same
//! primitives with a cost of the caller's choosing. scrypt parameters outside RFC
//! 7914 (n ≥ 2^(16·r), which geth accepts, as in the scrypt example of the Web3
//! Secret Storage Definition) are refused with an error saying so.
//!
//! `NAME.key` files (the secret key as hex, from earlier versions or written on
//! purpose with `--insecure-plaintext`) still load, with a warning.
//!
//! The passphrase comes from `--password-file FILE`, else the environment variable
//! `DEED_PASSWORD`, else a prompt when standard input is a terminal; with none of
//! these, commands that need one fail and say so.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use aes::cipher::{KeyIvInit, StreamCipher};
use anyhow::{bail, Context, Result};
use deed_types::{Address, SecretKey};
use serde_json::{json, Value};
use sha3::{Digest, Keccak256};

/// The environment variable a passphrase may come from.
pub const PASSWORD_ENV: &str = "DEED_PASSWORD";

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

/// Why an encrypted key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The passphrase does not open the file (its MAC does not match).
    #[error("wrong passphrase for {what}")]
    WrongPassphrase {
        /// The key or file.
        what: String,
    },
    /// The file is not a keystore this tool can read.
    #[error("{what} is not a valid keystore v3 file: {reason}")]
    Malformed {
        /// The key or file.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file asks for a key derivation costlier than this tool runs.
    #[error("{what} asks for a key derivation of {detail}, more than this tool runs")]
    TooCostly {
        /// The key or file.
        what: String,
        /// The parameters.
        detail: String,
    },
    /// No passphrase was given and none can be asked for.
    #[error(
        "{what} needs a passphrase: pass --password-file FILE, set {PASSWORD_ENV}, \
         or run in a terminal to be asked"
    )]
    NoPassphrase {
        /// What the passphrase is for.
        what: String,
    },
    /// The key derivation or cipher refused its parameters.
    #[error("cannot encrypt: {0}")]
    Crypto(String),
}

/// The scrypt cost of newly written keys: n = 2^`log_n`, r = 8, p = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    log_n: u8,
}

impl KdfCost {
    /// n = 2^13: about 8 MiB of memory per derivation. The default.
    pub const LIGHT: KdfCost = KdfCost { log_n: 13 };
    /// n = 2^18: geth's default, about 256 MiB per derivation.
    pub const STANDARD: KdfCost = KdfCost { log_n: 18 };

    /// n = 2^`log_n`, for `log_n` in 1..=20 (tests use small values).
    pub fn new(log_n: u8) -> Result<KdfCost, KeyFileError> {
        if !(1..=MAX_LOG_N).contains(&log_n) {
            return Err(KeyFileError::Crypto(format!(
                "scrypt log2(n) must be 1..={MAX_LOG_N}, not {log_n}"
            )));
        }
        Ok(KdfCost { log_n })
    }
}

impl Default for KdfCost {
    fn default() -> Self {
        KdfCost::LIGHT
    }
}

/// The largest scrypt cost read: n = 2^20 with r = 8 (1 GiB).
const MAX_LOG_N: u8 = 20;
/// The largest scrypt memory read, 128 · r · n bytes (twice geth's default).
const MAX_SCRYPT_MEMORY: u64 = 512 << 20;
/// The largest PBKDF2 iteration count read.
const MAX_PBKDF2_ROUNDS: u64 = 10_000_000;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

fn random<const N: usize>() -> Result<[u8; N], KeyFileError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyFileError::Crypto(format!("no randomness: {e}")))?;
    Ok(b)
}

/// `key` encrypted with `passphrase` as keystore v3 JSON (with the address, as geth
/// writes it).
pub fn encrypt_v3(
    key: &SecretKey,
    passphrase: &str,
    cost: KdfCost,
) -> Result<String, KeyFileError> {
    let salt: [u8; 32] = random()?;
    let iv: [u8; 16] = random()?;
    let id: [u8; 16] = random()?;
    let params = scrypt::Params::new(cost.log_n, SCRYPT_R, SCRYPT_P)
        .map_err(|e| KeyFileError::Crypto(e.to_string()))?;
    let mut derived = [0u8; 32];
    scrypt::scrypt(passphrase.as_bytes(), &salt, &params, &mut derived)
        .map_err(|e| KeyFileError::Crypto(e.to_string()))?;
    let mut ciphertext = key.to_bytes();
    let mut cipher = ctr::Ctr128BE::<aes::Aes128>::new_from_slices(&derived[..16], &iv)
        .map_err(|e| KeyFileError::Crypto(e.to_string()))?;
    cipher.apply_keystream(&mut ciphertext);
    let mac = Keccak256::new()
        .chain_update(&derived[16..32])
        .chain_update(ciphertext)
        .finalize();
    let doc = json!({
        "address": hex::encode(key.address().0),
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": { "iv": hex::encode(iv) },
            "ciphertext": hex::encode(ciphertext),
            "kdf": "scrypt",
            "kdfparams": {
                "dklen": 32,
                "n": 1u32 << cost.log_n,
                "p": SCRYPT_P,
                "r": SCRYPT_R,
                "salt": hex::encode(salt),
            },
            "mac": hex::encode(mac),
        },
        "id": uuid_v4_text(id),
        "version": 3,
    });
    serde_json::to_string_pretty(&doc).map_err(|e| KeyFileError::Crypto(e.to_string()))
}

/// A random (version 4) UUID in its text form, for the file's `id`.
fn uuid_v4_text(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The secret key in keystore v3 `text`, opened with `passphrase`. `what` names
/// the file in errors.
pub fn decrypt_v3(text: &str, passphrase: &str, what: &str) -> Result<SecretKey, KeyFileError> {
    check_v3(text, what)?;
    // eth-keystore reads files: hand it the checked text in a private scratch file
    // (it holds nothing the keystore file does not).
    let scratch = || -> std::io::Result<tempfile::NamedTempFile> {
        let mut f = tempfile::NamedTempFile::new()?;
        f.write_all(text.as_bytes())?;
        f.flush()?;
        Ok(f)
    };
    let f = scratch().map_err(|e| KeyFileError::Crypto(format!("scratch file: {e}")))?;
    let bytes = match eth_keystore::decrypt_key(f.path(), passphrase) {
        Ok(b) => b,
        Err(eth_keystore::KeystoreError::MacMismatch) => {
            return Err(KeyFileError::WrongPassphrase {
                what: what.to_owned(),
            })
        }
        Err(e) => return Err(malformed(what, e.to_string())),
    };
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| malformed(what, "the secret is not 32 bytes".into()))?;
    SecretKey::from_bytes(&bytes).map_err(|e| malformed(what, format!("not a secp256k1 key: {e}")))
}

fn malformed(what: &str, reason: String) -> KeyFileError {
    KeyFileError::Malformed {
        what: what.to_owned(),
        reason,
    }
}

/// Checks every field of a v3 file that decryption uses, so that no file can make
/// it fail other than by a clean error, or make it run for ever.
fn check_v3(text: &str, what: &str) -> Result<Value, KeyFileError> {
    let bad = |reason: &str| malformed(what, reason.to_owned());
    let doc: Value = serde_json::from_str(text).map_err(|e| malformed(what, e.to_string()))?;
    if doc.get("version").and_then(Value::as_u64) != Some(3) {
        return Err(bad("version is not 3"));
    }
    // geth wrote `Crypto` in early files.
    let crypto = doc
        .get("crypto")
        .or_else(|| doc.get("Crypto"))
        .ok_or_else(|| bad("no crypto section"))?;
    let hex_len = |v: Option<&Value>, field: &str, want: Option<usize>| {
        let s = v
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(what, format!("{field} is missing")))?;
        let b = hex::decode(s).map_err(|_| malformed(what, format!("{field} is not hex")))?;
        match want {
            Some(n) if b.len() != n => Err(malformed(
                what,
                format!("{field} is {} bytes, not {n}", b.len()),
            )),
            _ => Ok(b),
        }
    };
    if crypto.get("cipher").and_then(Value::as_str) != Some("aes-128-ctr") {
        return Err(bad("cipher is not aes-128-ctr"));
    }
    hex_len(
        crypto.pointer("/cipherparams/iv"),
        "cipherparams.iv",
        Some(16),
    )?;
    hex_len(crypto.get("ciphertext"), "ciphertext", Some(32))?;
    hex_len(crypto.get("mac"), "mac", Some(32))?;
    if doc.get("id").and_then(Value::as_str).is_none() {
        return Err(bad("id is missing"));
    }
    let p = crypto
        .get("kdfparams")
        .ok_or_else(|| bad("kdfparams is missing"))?;
    let num = |field: &str| {
        p.get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed(what, format!("kdfparams.{field} is missing")))
    };
    if num("dklen")? != 32 {
        return Err(bad("kdfparams.dklen is not 32"));
    }
    let salt = hex_len(p.get("salt"), "kdfparams.salt", None)?;
    if salt.is_empty() {
        return Err(bad("kdfparams.salt is empty"));
    }
    match crypto.get("kdf").and_then(Value::as_str) {
        Some("scrypt") => {
            let (n, r, pp) = (num("n")?, num("r")?, num("p")?);
            if n < 2 || !n.is_power_of_two() {
                return Err(bad("kdfparams.n is not a power of two"));
            }
            if r == 0 || pp == 0 || r > u64::from(u32::MAX) || pp > u64::from(u32::MAX) {
                return Err(bad("kdfparams.r or p is out of range"));
            }
            // RFC 7914 asks n < 2^(16·r); the scrypt implementation used here holds
            // to it (geth does not, and the scrypt example of the Web3 Secret
            // Storage Definition, r = 1 with n = 2^18, breaks it).
            if u64::from(n.trailing_zeros()) >= 16u64.saturating_mul(r) {
                return Err(malformed(
                    what,
                    format!(
                        "scrypt n={n} with r={r} is outside RFC 7914 (n < 2^(16·r)); \
                         re-encrypt the key (for example with geth or `cast wallet`) \
                         with standard parameters"
                    ),
                ));
            }
            let memory = 128u64.saturating_mul(r).saturating_mul(n);
            if n > 1 << MAX_LOG_N || memory > MAX_SCRYPT_MEMORY || pp > 16 {
                return Err(KeyFileError::TooCostly {
                    what: what.to_owned(),
                    detail: format!("scrypt n={n} r={r} p={pp}"),
                });
            }
        }
        Some("pbkdf2") => {
            if p.get("prf").and_then(Value::as_str) != Some("hmac-sha256") {
                return Err(bad("kdfparams.prf is not hmac-sha256"));
            }
            let c = num("c")?;
            if c == 0 {
                return Err(bad("kdfparams.c is zero"));
            }
            if c > MAX_PBKDF2_ROUNDS {
                return Err(KeyFileError::TooCostly {
                    what: what.to_owned(),
                    detail: format!("pbkdf2 c={c}"),
                });
            }
        }
        _ => return Err(bad("kdf is neither scrypt nor pbkdf2")),
    }
    Ok(doc)
}

/// The address a v3 file declares, if it declares one.
fn declared_address(doc: &Value) -> Option<Address> {
    let a = doc.get("address")?.as_str()?;
    let a = a.strip_prefix("0x").unwrap_or(a);
    format!("0x{a}").to_lowercase().parse().ok()
}

/// Whether `text` looks like a JSON keystore rather than hex.
fn is_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Where passphrases come from: `--password-file`, else `DEED_PASSWORD`, else a
/// prompt on a terminal.
#[derive(Clone, Debug, Default)]
pub struct Passphrase {
    file: Option<PathBuf>,
}

impl Passphrase {
    /// Passphrases from `file` when given, else the environment or a prompt.
    pub fn new(file: Option<PathBuf>) -> Passphrase {
        Passphrase { file }
    }

    /// The passphrase that opens `what`.
    pub fn get(&self, what: &str) -> Result<String> {
        self.ask(what, false)
    }

    /// A passphrase to encrypt `what` with (asked twice on a terminal).
    pub fn choose(&self, what: &str) -> Result<String> {
        self.ask(what, true)
    }

    fn ask(&self, what: &str, confirm: bool) -> Result<String> {
        if let Some(path) = &self.file {
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read password file {}", path.display()))?;
            // The first line, as geth reads password files.
            return Ok(text.lines().next().unwrap_or("").to_owned());
        }
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            return Ok(p);
        }
        if !std::io::stdin().is_terminal() {
            return Err(KeyFileError::NoPassphrase {
                what: what.to_owned(),
            }
            .into());
        }
        let first = rpassword::prompt_password(format!("Passphrase for {what}: "))
            .context("cannot read the passphrase")?;
        if confirm {
            let again = rpassword::prompt_password("Repeat the passphrase: ")
                .context("cannot read the passphrase")?;
            if again != first {
                bail!("the passphrases differ");
            }
        }
        Ok(first)
    }
}

/// The keystore.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
    cost: KdfCost,
}

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key's name (its file name without the extension).
    pub name: String,
    /// Its address.
    pub address: Address,
    /// Whether the file is encrypted (`NAME.json`) or plain hex (`NAME.key`).
    pub encrypted: bool,
}

impl Keystore {
    /// The keystore under [`deed_home`].
    pub fn open_default() -> Result<Keystore> {
        Ok(Keystore::at(deed_home()?.join("keys")))
    }

    /// A keystore in `dir` (created on first write), writing keys with
    /// [`KdfCost::LIGHT`].
    pub fn at(dir: impl Into<PathBuf>) -> Keystore {
        Keystore {
            dir: dir.into(),
            cost: KdfCost::default(),
        }
    }

    /// The same keystore writing new keys with scrypt cost `cost`.
    pub fn with_cost(mut self, cost: KdfCost) -> Keystore {
        self.cost = cost;
        self
    }

    /// The keystore's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        check_name(name)?;
        Ok((
            self.dir.join(format!("{name}.json")),
            self.dir.join(format!("{name}.key")),
        ))
    }

    /// Stores `key` as `name`, encrypted with `passphrase`; refuses to overwrite an
    /// existing key.
    pub fn insert(&self, name: &str, key: &SecretKey, passphrase: &str) -> Result<KeyEntry> {
        let text = encrypt_v3(key, passphrase, self.cost)?;
        self.write_new(name, "json", &text)?;
        Ok(KeyEntry {
            name: name.to_owned(),
            address: key.address(),
            encrypted: true,
        })
    }

    /// Stores `key` as `name` unencrypted (`NAME.key`, hex): for throwaway dev keys
    /// only.
    pub fn insert_plaintext(&self, name: &str, key: &SecretKey) -> Result<KeyEntry> {
        self.write_new(name, "key", &format!("{}\n", hex::encode(key.to_bytes())))?;
        Ok(KeyEntry {
            name: name.to_owned(),
            address: key.address(),
            encrypted: false,
        })
    }

    /// Stores the keystore v3 file `text` as `name` after opening it with
    /// `passphrase` (which stays its passphrase: the encryption is kept as it is,
    /// with the address added when the file lacks it).
    pub fn import_v3(&self, name: &str, text: &str, passphrase: &str) -> Result<KeyEntry> {
        let what = format!("the imported key `{name}`");
        let key = decrypt_v3(text, passphrase, &what)?;
        let mut doc = check_v3(text, &what)?;
        match declared_address(&doc) {
            Some(a) if a != key.address() => {
                bail!(
                    "{what} declares address {a} but holds the key of {}",
                    key.address()
                )
            }
            Some(_) => {}
            None => {
                if let Some(o) = doc.as_object_mut() {
                    o.insert("address".into(), hex::encode(key.address().0).into());
                }
            }
        }
        let text = serde_json::to_string_pretty(&doc).context("cannot encode the key file")?;
        self.write_new(name, "json", &text)?;
        Ok(KeyEntry {
            name: name.to_owned(),
            address: key.address(),
            encrypted: true,
        })
    }

    fn write_new(&self, name: &str, ext: &str, text: &str) -> Result<()> {
        let (json_path, key_path) = self.paths(name)?;
        if json_path.exists() || key_path.exists() {
            bail!(
                "a key named `{name}` already exists in {}",
                self.dir.display()
            );
        }
        let path = if ext == "json" { json_path } else { key_path };
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
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Loads the key called `name`, asking `pass` for the passphrase if it is
    /// encrypted.
    pub fn get(&self, name: &str, pass: &Passphrase) -> Result<SecretKey> {
        let (json_path, key_path) = self.paths(name)?;
        if json_path.is_file() {
            return read_v3_file(&json_path, &format!("key `{name}`"), pass);
        }
        if key_path.is_file() {
            warn_plaintext(&key_path);
            return read_key_file(&key_path);
        }
        bail!(
            "no key named `{name}` in {} (see `deed keys list`)",
            self.dir.display()
        )
    }

    /// The address of the key called `name`, without decrypting it when its file
    /// declares it.
    pub fn address(&self, name: &str, pass: &Passphrase) -> Result<Address> {
        let (json_path, _) = self.paths(name)?;
        if json_path.is_file() {
            let text = read_text(&json_path)?;
            let doc = check_v3(&text, &format!("key `{name}`"))?;
            if let Some(a) = declared_address(&doc) {
                return Ok(a);
            }
        }
        Ok(self.get(name, pass)?.address())
    }

    /// Every stored key, by name. Encrypted keys are listed by the address their
    /// file declares, without a passphrase.
    pub fn list(&self) -> Result<Vec<KeyEntry>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.dir.display())),
        };
        let mut out: Vec<KeyEntry> = Vec::new();
        for entry in rd {
            let path = entry?.path();
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(name) = file.strip_suffix(".json") {
                let what = format!("key `{name}`");
                let doc = check_v3(&read_text(&path)?, &what)?;
                let address = declared_address(&doc).with_context(|| {
                    format!(
                        "{} declares no address; re-import it with `deed keys import`",
                        path.display()
                    )
                })?;
                out.retain(|e| e.name != name);
                out.push(KeyEntry {
                    name: name.to_owned(),
                    address,
                    encrypted: true,
                });
            } else if let Some(name) = file.strip_suffix(".key") {
                if out.iter().any(|e| e.name == name) {
                    continue;
                }
                let key = read_key_file(&path)?;
                out.push(KeyEntry {
                    name: name.to_owned(),
                    address: key.address(),
                    encrypted: false,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

fn warn_plaintext(path: &Path) {
    eprintln!(
        "warning: {} holds an unencrypted key; encrypt it with \
         `deed keys import NEW_NAME {}` and delete the old file",
        path.display(),
        path.display()
    );
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_v3_file(path: &Path, what: &str, pass: &Passphrase) -> Result<SecretKey> {
    let text = read_text(path)?;
    // Checked before asking for a passphrase: a bad file fails without a prompt.
    check_v3(&text, what)?;
    let passphrase = pass.get(what)?;
    Ok(decrypt_v3(&text, &passphrase, what)?)
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
    parse_hex_key(&read_text(path)?).with_context(|| format!("bad key file {}", path.display()))
}

/// Reads a key file of either kind: keystore v3 JSON (asking `pass` for its
/// passphrase) or hex text.
pub fn read_any_key_file(path: &Path, pass: &Passphrase) -> Result<SecretKey> {
    let text = read_text(path)?;
    if is_json(&text) {
        let what = path.display().to_string();
        check_v3(&text, &what)?;
        let passphrase = pass.get(&what)?;
        return Ok(decrypt_v3(&text, &passphrase, &what)?);
    }
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

/// Resolves `--key`: a path to a key file (hex or keystore v3), 64 hex digits, or a
/// keystore name.
pub fn resolve(store: &Keystore, spec: &str, pass: &Passphrase) -> Result<SecretKey> {
    let path = Path::new(spec);
    if path.is_file() {
        return read_any_key_file(path, pass);
    }
    let t = spec.strip_prefix("0x").unwrap_or(spec);
    if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        return parse_hex_key(spec);
    }
    store.get(spec, pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scrypt example of the Web3 Secret Storage Definition (passphrase
    /// "testpassword"): r = 1 with n = 2^18, outside RFC 7914.
    const SPEC_SCRYPT: &str = r#"{
        "crypto" : {
            "cipher" : "aes-128-ctr",
            "cipherparams" : { "iv" : "83dbcc02d8ccb40e466191a123791e0e" },
            "ciphertext" : "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
            "kdf" : "scrypt",
            "kdfparams" : {
                "dklen" : 32,
                "n" : 262144,
                "p" : 8,
                "r" : 1,
                "salt" : "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"
            },
            "mac" : "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097"
        },
        "id" : "3198bc9c-6672-5ab3-d995-4942343ae5b6",
        "version" : 3
    }"#;

    /// The PBKDF2 test vector of the Web3 Secret Storage Definition (passphrase
    /// "testpassword").
    const SPEC_PBKDF2: &str = include_str!("../tests/data/web3-pbkdf2-vector.json");

    const SPEC_SECRET: &str = "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";

    fn cheap() -> KdfCost {
        KdfCost::new(4).unwrap()
    }

    #[test]
    fn spec_test_vector_decrypts() {
        let k = decrypt_v3(SPEC_PBKDF2, "testpassword", "vector").unwrap();
        assert_eq!(hex::encode(k.to_bytes()), SPEC_SECRET);
        let e = decrypt_v3(SPEC_PBKDF2, "wrong", "vector").unwrap_err();
        assert!(matches!(e, KeyFileError::WrongPassphrase { .. }), "{e:?}");
    }

    #[test]
    fn scrypt_parameters_outside_rfc_7914_are_refused_by_name() {
        let e = decrypt_v3(SPEC_SCRYPT, "testpassword", "vector").unwrap_err();
        match &e {
            KeyFileError::Malformed { reason, .. } => {
                assert!(reason.contains("RFC 7914"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let k = generate().unwrap();
        let text = encrypt_v3(&k, "correct horse", cheap()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["version"], 3);
        assert_eq!(doc["crypto"]["kdfparams"]["n"], 16);
        assert_eq!(declared_address(&doc), Some(k.address()));
        assert_eq!(
            decrypt_v3(&text, "correct horse", "k").unwrap().to_bytes(),
            k.to_bytes()
        );
        let e = decrypt_v3(&text, "correct horse!", "k").unwrap_err();
        assert!(matches!(e, KeyFileError::WrongPassphrase { .. }), "{e:?}");
        assert_eq!(e.to_string(), "wrong passphrase for k");
        // The default cost is the light one, n = 2^13.
        let text = encrypt_v3(&k, "", KdfCost::default()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["crypto"]["kdfparams"]["n"], 8192);
        assert_eq!(decrypt_v3(&text, "", "k").unwrap().address(), k.address());
    }

    #[test]
    fn malformed_files_are_refused_without_panicking() {
        let k = SecretKey::from_seed(b"malformed");
        let good: Value = serde_json::from_str(&encrypt_v3(&k, "p", cheap()).unwrap()).unwrap();
        let edits: Vec<(&str, Value)> = vec![
            ("/version", json!(1)),
            ("/crypto/cipher", json!("aes-256-gcm")),
            ("/crypto/cipherparams/iv", json!("00")),
            ("/crypto/cipherparams/iv", json!("zz")),
            ("/crypto/ciphertext", json!("0011")),
            ("/crypto/mac", json!("")),
            ("/crypto/kdfparams/dklen", json!(16)),
            ("/crypto/kdfparams/n", json!(1000)),
            ("/crypto/kdfparams/n", json!(0)),
            ("/crypto/kdfparams/r", json!(0)),
            ("/crypto/kdfparams/salt", json!("")),
            ("/crypto/kdf", json!("argon2")),
            ("/id", json!(null)),
        ];
        for (ptr, v) in edits {
            let mut doc = good.clone();
            *doc.pointer_mut(ptr).unwrap() = v.clone();
            let e = decrypt_v3(&doc.to_string(), "p", "f").unwrap_err();
            assert!(
                matches!(e, KeyFileError::Malformed { .. }),
                "{ptr} = {v}: {e:?}"
            );
        }
        let mut doc = good.clone();
        doc["crypto"]["kdfparams"]["n"] = json!(1u64 << 30);
        assert!(matches!(
            decrypt_v3(&doc.to_string(), "p", "f").unwrap_err(),
            KeyFileError::TooCostly { .. }
        ));
        for text in ["", "{", "[]", "{\"version\":3}", "null"] {
            assert!(decrypt_v3(text, "p", "f").is_err(), "{text}");
        }
    }

    #[test]
    fn insert_get_list_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::at(dir.path().join("keys")).with_cost(cheap());
        let pass = Passphrase::new(Some(dir.path().join("pw")));
        fs::write(dir.path().join("pw"), "hunter2\nignored\n").unwrap();
        assert!(ks.list().unwrap().is_empty());
        let k = generate().unwrap();
        let e = ks.insert("alice", &k, "hunter2").unwrap();
        assert_eq!(e.address, k.address());
        assert!(e.encrypted);
        assert_eq!(ks.get("alice", &pass).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(ks.address("alice", &pass).unwrap(), k.address());
        assert!(ks.insert("alice", &generate().unwrap(), "x").is_err());
        assert!(ks.insert_plaintext("alice", &generate().unwrap()).is_err());
        let text = fs::read_to_string(dir.path().join("keys/alice.json")).unwrap();
        assert!(
            !text.contains(&hex::encode(k.to_bytes())),
            "encrypted at rest"
        );
        let wrong = Passphrase::new(Some(dir.path().join("wrong")));
        fs::write(dir.path().join("wrong"), "hunter3").unwrap();
        let err = ks.get("alice", &wrong).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<KeyFileError>(),
                Some(KeyFileError::WrongPassphrase { .. })
            ),
            "{err:?}"
        );
        // A plain key from an earlier version still loads.
        let old = SecretKey::from_seed(b"old");
        ks.insert_plaintext("bob", &old).unwrap();
        assert_eq!(ks.get("bob", &wrong).unwrap().address(), old.address());
        assert_eq!(
            ks.list().unwrap(),
            vec![
                e,
                KeyEntry {
                    name: "bob".into(),
                    address: old.address(),
                    encrypted: false
                }
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["keys/alice.json", "keys/bob.key"] {
                let mode = fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        assert!(ks
            .get("carol", &pass)
            .unwrap_err()
            .to_string()
            .contains("no key named"));
        assert!(ks.insert("../evil", &k, "x").is_err());
    }

    #[test]
    fn import_keeps_the_files_encryption_and_adds_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::at(dir.path().join("keys"));
        let pass = Passphrase::new(Some(dir.path().join("pw")));
        fs::write(dir.path().join("pw"), "testpassword").unwrap();
        assert!(matches!(
            ks.import_v3("v", SPEC_PBKDF2, "nope")
                .unwrap_err()
                .downcast_ref::<KeyFileError>(),
            Some(KeyFileError::WrongPassphrase { .. })
        ));
        let e = ks.import_v3("v", SPEC_PBKDF2, "testpassword").unwrap();
        assert_eq!(
            hex::encode(ks.get("v", &pass).unwrap().to_bytes()),
            SPEC_SECRET
        );
        let stored: Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("keys/v.json")).unwrap())
                .unwrap();
        assert_eq!(stored["crypto"]["kdf"], "pbkdf2");
        assert_eq!(declared_address(&stored), Some(e.address));
        assert_eq!(ks.list().unwrap(), vec![e]);
    }

    #[test]
    fn resolve_accepts_name_hex_and_both_kinds_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::at(dir.path().join("keys")).with_cost(cheap());
        let pass = Passphrase::new(Some(dir.path().join("pw")));
        fs::write(dir.path().join("pw"), "pw").unwrap();
        let k = SecretKey::from_seed(b"resolve");
        ks.insert("k", &k, "pw").unwrap();
        let hex_text = hex::encode(k.to_bytes());
        assert_eq!(resolve(&ks, "k", &pass).unwrap().address(), k.address());
        assert_eq!(
            resolve(&ks, &hex_text, &pass).unwrap().address(),
            k.address()
        );
        assert_eq!(
            resolve(&ks, &format!("0x{hex_text}"), &pass)
                .unwrap()
                .address(),
            k.address()
        );
        let file = dir.path().join("key.txt");
        fs::write(&file, format!("0x{hex_text}\n")).unwrap();
        assert_eq!(
            resolve(&ks, file.to_str().unwrap(), &pass)
                .unwrap()
                .address(),
            k.address()
        );
        let json_file = dir.path().join("key.json");
        fs::write(&json_file, encrypt_v3(&k, "pw", cheap()).unwrap()).unwrap();
        assert_eq!(
            resolve(&ks, json_file.to_str().unwrap(), &pass)
                .unwrap()
                .address(),
            k.address()
        );
        assert!(resolve(&ks, "nobody", &pass).is_err());
        assert!(parse_hex_key(&"0".repeat(64)).is_err());
    }
}
