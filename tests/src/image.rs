//! Test images built from bytes: OCI (or Docker schema 2) image manifests with
//! a valid config and small gzip'd tar layers, and multi-arch indexes
//! (linux/amd64 + linux/arm64). Content is derived from a label, so distinct
//! labels give distinct digests and the same label gives the same image.
//! Pushing lives in `push.rs`.

use std::path::Path;

use anyhow::Context;
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// A blob or manifest: bytes with their media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Blob {
    /// A blob of `bytes` with `media_type`.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    /// Its OCI descriptor as JSON.
    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One platform's image inside a [`BuiltImage`].
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `linux/amd64`.
    pub platform: String,
    /// The image manifest.
    pub manifest: Blob,
}

/// An image (single manifest) or index, with every blob it needs.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The top-level manifest: an image manifest or an index.
    pub top: Blob,
    /// The platform manifests (one for a single image, each entry of an index).
    pub platforms: Vec<PlatformImage>,
    /// Configs and layers of every platform.
    pub blobs: Vec<Blob>,
}

impl BuiltImage {
    /// The digest of the top-level manifest (for an index, the index digest).
    pub fn digest(&self) -> &str {
        &self.top.digest
    }

    /// Whether this is a multi-platform index.
    pub fn is_index(&self) -> bool {
        self.top.media_type.contains("index") || self.top.media_type.contains("list")
    }

    /// The platform manifests' digests (for an index; empty for an image).
    pub fn platform_digests(&self) -> Vec<String> {
        if self.is_index() {
            self.platforms
                .iter()
                .map(|p| p.manifest.digest.clone())
                .collect()
        } else {
            Vec::new()
        }
    }

    /// Every manifest below the top (the platform manifests of an index).
    pub fn child_manifests(&self) -> Vec<&Blob> {
        if self.is_index() {
            self.platforms.iter().map(|p| &p.manifest).collect()
        } else {
            Vec::new()
        }
    }

    /// Writes an OCI image layout at `dir` with the top manifest tagged `tag`
    /// (what `skopeo copy oci:DIR:TAG` reads).
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> anyhow::Result<()> {
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        let everything = self
            .blobs
            .iter()
            .chain(self.child_manifests())
            .chain(std::iter::once(&self.top));
        for blob in everything {
            let hex = blob.digest.trim_start_matches("sha256:");
            std::fs::write(blobs.join(hex), &blob.bytes)?;
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut descriptor = self.top.descriptor();
        descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(())
    }
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Builds test images from a label.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    label: String,
    layers: usize,
    layer_size: usize,
    docker_media_types: bool,
}

impl ImageBuilder {
    /// A builder whose content derives from `label` (distinct labels, distinct images).
    pub fn new(label: &str) -> ImageBuilder {
        ImageBuilder {
            label: label.to_string(),
            layers: 1,
            layer_size: 512,
            docker_media_types: false,
        }
    }

    /// Number of layers per platform (default 1).
    pub fn layers(mut self, layers: usize) -> ImageBuilder {
        self.layers = layers;
        self
    }

    /// Size of each layer's file content in bytes (default 512).
    pub fn layer_size(mut self, size: usize) -> ImageBuilder {
        self.layer_size = size;
        self
    }

    /// Use Docker schema 2 media types (what `docker push` writes) instead of OCI.
    pub fn docker_media_types(mut self, docker: bool) -> ImageBuilder {
        self.docker_media_types = docker;
        self
    }

    /// A single-platform (linux/amd64) image.
    pub fn image(&self) -> BuiltImage {
        let (manifest, blobs) = self.platform_manifest("amd64");
        BuiltImage {
            top: manifest.clone(),
            platforms: vec![PlatformImage {
                platform: "linux/amd64".to_string(),
                manifest,
            }],
            blobs,
        }
    }

    /// A multi-arch index of linux/amd64 and linux/arm64 images.
    pub fn index(&self) -> BuiltImage {
        let mut platforms = Vec::new();
        let mut blobs = Vec::new();
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let (manifest, mut arch_blobs) = self.platform_manifest(arch);
            let mut entry = manifest.descriptor();
            entry["platform"] = json!({"architecture": arch, "os": "linux"});
            entries.push(entry);
            platforms.push(PlatformImage {
                platform: format!("linux/{arch}"),
                manifest,
            });
            blobs.append(&mut arch_blobs);
        }
        let media_type = if self.docker_media_types {
            DOCKER_LIST
        } else {
            OCI_INDEX
        };
        let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": entries});
        BuiltImage {
            top: Blob::new(media_type, to_json(&index)),
            platforms,
            blobs,
        }
    }

    /// The manifest of one platform and its config and layer blobs.
    fn platform_manifest(&self, arch: &str) -> (Blob, Vec<Blob>) {
        let (manifest_type, config_type, layer_type) = if self.docker_media_types {
            (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
        } else {
            (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
        };
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for n in 0..self.layers {
            let content = seeded_bytes(&format!("{}/{arch}/{n}", self.label), self.layer_size);
            let tar = tar_one_file(&format!("imgate-test/{arch}-{n}.bin"), &content);
            diff_ids.push(sha256_digest(&tar));
            layers.push(Blob::new(layer_type, gzip_stored(&tar)));
        }
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/true"],
                "Labels": {"dev.imgate.test.label": self.label},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "imgate test harness"}],
        });
        let config = Blob::new(config_type, to_json(&config));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
            "annotations": {"dev.imgate.test.label": self.label},
        });
        let mut manifest = to_json(&manifest);
        if self.docker_media_types {
            // Docker schema 2 has no annotations; re-encode without them.
            let mut value: serde_json::Value =
                serde_json::from_slice(&manifest).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.remove("annotations");
            }
            manifest = to_json(&value);
        }
        let mut blobs = vec![config];
        blobs.append(&mut layers);
        (Blob::new(manifest_type, manifest), blobs)
    }
}

fn to_json(value: &serde_json::Value) -> Vec<u8> {
    // serde_json cannot fail on a `Value`.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `len` deterministic pseudo-random bytes derived from `seed` (SHA-256 in counter mode).
pub fn seeded_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(seed.as_bytes());
        hasher.update(counter.to_be_bytes());
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A ustar archive holding one regular file.
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    let name_bytes = name.as_bytes();
    let n = name_bytes.len().min(100);
    header[..n].copy_from_slice(&name_bytes[..n]);
    put_octal(&mut header[100..108], 0o644);
    put_octal(&mut header[108..116], 0);
    put_octal(&mut header[116..124], 0);
    put_octal(&mut header[124..136], content.len() as u64);
    put_octal(&mut header[136..148], 1_704_067_200);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    let checksum = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(checksum.as_bytes());

    let mut out = header.to_vec();
    out.extend_from_slice(content);
    let padding = (512 - content.len() % 512) % 512;
    out.resize(out.len() + padding + 1024, 0);
    out
}

fn put_octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

/// gzip of `data` using deflate "stored" blocks: valid gzip that any reader
/// accepts, without a compression library.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn gzip_and_tar_are_readable_by_system_tools() {
        let dir = tempfile::tempdir().unwrap();
        let content = seeded_bytes("tools", 70_000);
        let layer = gzip_stored(&tar_one_file("a/b.bin", &content));
        let file = dir.path().join("layer.tar.gz");
        std::fs::write(&file, layer).unwrap();
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(dir.path().join("a/b.bin")).unwrap(), content);
    }

    #[test]
    fn labels_make_distinct_images_and_same_label_same_image() {
        let a = ImageBuilder::new("a").image();
        let b = ImageBuilder::new("b").image();
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), ImageBuilder::new("a").image().digest());
        let index = ImageBuilder::new("a").index();
        assert!(index.is_index());
        assert_eq!(index.platform_digests().len(), 2);
        assert_ne!(index.platform_digests()[0], index.platform_digests()[1]);
        let parsed: serde_json::Value = serde_json::from_slice(&index.top.bytes).unwrap();
        assert_eq!(parsed["manifests"][1]["platform"]["architecture"], "arm64");
    }
}
