//! Streaming AES-256-GCM for artifacts at rest: the STREAM construction (`aead-stream`, big-endian
//! 32-bit counter) over 64 KiB segments, so memory stays flat whatever the artifact's size, and
//! reordering, truncation or tampering of any segment fails authentication.
//!
//! File layout: 8-byte magic `PSTKAE01`, 7-byte random nonce prefix, then segments of
//! `64 KiB + 16`-byte ciphertext, the last one shorter (possibly only its 16-byte tag) and
//! flagged as last inside its nonce. The magic is the associated data of every segment.
//!
//! The functions here block on IO; call them through `tokio::task::spawn_blocking`.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};

use aead_stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, KeyInit};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"PSTKAE01";
const NONCE_PREFIX_LEN: usize = 7;
const SEGMENT_LEN: usize = 64 * 1024;
const TAG_LEN: usize = 16;

/// A 256-bit artifact key. Its `Debug` output is redacted so it can never reach a log.
#[derive(Clone)]
pub struct ArtifactKey([u8; 32]);

impl ArtifactKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|err| CryptoError::Random(err.to_string()))?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key, for writing the key file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

impl fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArtifactKey([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("reading or writing the artifact stream: {0}")]
    Io(#[from] io::Error),
    #[error("not an encrypted artifact (bad or missing header)")]
    BadHeader,
    #[error(
        "encrypted artifact failed authentication: it was tampered with, truncated or encrypted under another key"
    )]
    Authentication,
    #[error("the random source failed: {0}")]
    Random(String),
}

/// Size and SHA-256 of the plaintext that went through a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaintextDigest {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// Encrypts everything `reader` yields into `writer`.
pub fn encrypt_stream(
    key: &ArtifactKey,
    reader: impl Read,
    mut writer: impl Write,
) -> Result<PlaintextDigest, CryptoError> {
    let mut prefix = [0u8; NONCE_PREFIX_LEN];
    getrandom::fill(&mut prefix).map_err(|err| CryptoError::Random(err.to_string()))?;
    writer.write_all(MAGIC)?;
    writer.write_all(&prefix)?;

    let mut encryptor = EncryptorBE32::from_aead(key.cipher(), &prefix.into());
    let mut reader = BufReader::with_capacity(SEGMENT_LEN, reader);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buffer: Vec<u8> = Vec::with_capacity(SEGMENT_LEN + TAG_LEN);
    loop {
        buffer.clear();
        let read = read_up_to(&mut reader, &mut buffer, SEGMENT_LEN)?;
        hasher.update(&buffer);
        size += read as u64;
        // A full segment is the last one only when nothing follows it.
        let last = read < SEGMENT_LEN || reader.fill_buf()?.is_empty();
        if last {
            encryptor
                .encrypt_last_in_place(MAGIC, &mut buffer)
                .map_err(|_| CryptoError::Authentication)?;
            writer.write_all(&buffer)?;
            break;
        }
        encryptor
            .encrypt_next_in_place(MAGIC, &mut buffer)
            .map_err(|_| CryptoError::Authentication)?;
        writer.write_all(&buffer)?;
    }
    writer.flush()?;
    Ok(PlaintextDigest {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Decrypts `reader` into `writer`, failing on any tampering or truncation. Bytes of earlier,
/// authenticated segments may already have been written when a later segment fails, so write
/// to a scratch file and only keep it on success.
pub fn decrypt_stream(
    key: &ArtifactKey,
    reader: impl Read,
    mut writer: impl Write,
) -> Result<PlaintextDigest, CryptoError> {
    let mut reader = BufReader::with_capacity(SEGMENT_LEN + TAG_LEN, reader);
    let mut header = [0u8; MAGIC.len() + NONCE_PREFIX_LEN];
    let mut header_buf = Vec::with_capacity(header.len());
    if read_up_to(&mut reader, &mut header_buf, header.len())? != header.len() {
        return Err(CryptoError::BadHeader);
    }
    header.copy_from_slice(&header_buf);
    if &header[..MAGIC.len()] != MAGIC {
        return Err(CryptoError::BadHeader);
    }
    let mut prefix = [0u8; NONCE_PREFIX_LEN];
    prefix.copy_from_slice(&header[MAGIC.len()..]);

    let mut decryptor = DecryptorBE32::from_aead(key.cipher(), &prefix.into());
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buffer: Vec<u8> = Vec::with_capacity(SEGMENT_LEN + TAG_LEN);
    loop {
        buffer.clear();
        let read = read_up_to(&mut reader, &mut buffer, SEGMENT_LEN + TAG_LEN)?;
        if read < TAG_LEN {
            return Err(CryptoError::Authentication);
        }
        let last = read < SEGMENT_LEN + TAG_LEN || reader.fill_buf()?.is_empty();
        if last {
            decryptor
                .decrypt_last_in_place(MAGIC, &mut buffer)
                .map_err(|_| CryptoError::Authentication)?;
            hasher.update(&buffer);
            size += buffer.len() as u64;
            writer.write_all(&buffer)?;
            break;
        }
        decryptor
            .decrypt_next_in_place(MAGIC, &mut buffer)
            .map_err(|_| CryptoError::Authentication)?;
        hasher.update(&buffer);
        size += buffer.len() as u64;
        writer.write_all(&buffer)?;
    }
    writer.flush()?;
    Ok(PlaintextDigest {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Appends up to `limit` bytes to `buffer`, stopping early only at end of input.
fn read_up_to(reader: &mut impl Read, buffer: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let read = reader.by_ref().take(limit as u64).read_to_end(buffer)?;
    Ok(read)
}
