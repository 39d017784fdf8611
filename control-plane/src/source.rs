//! Where a model comes from: a local path, an http(s) URL (downloaded once into the cache), or a
//! file in a Hugging Face Hub repository (`hf:OWNER/REPO/FILE.gguf`, through `hf-hub`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// How long a download may wait to connect, or between bytes, before failing.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a Hugging Face Hub fetch may take in all before failing.
const HUB_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a model source could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

type Result<T> = std::result::Result<T, SourceError>;

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(SourceError(format!($($t)*)))
    };
}

/// Adds what was being done to an error.
trait Context<T> {
    fn context(self, what: impl std::fmt::Display) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| SourceError(format!("{what}: {e}")))
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| SourceError(format!("{}: {e}", f())))
    }
}

/// A model location as given on the command line or in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A file on this machine.
    Path(PathBuf),
    /// An http(s) URL.
    Url(String),
    /// A file in a Hugging Face Hub model repository.
    Hub {
        /// `OWNER/REPO`.
        repo: String,
        /// Path of the file inside the repository.
        file: String,
    },
}

impl ModelSource {
    /// Parses `PATH`, `http(s)://...` or `hf:OWNER/REPO/FILE`.
    pub fn parse(spec: &str) -> Result<ModelSource> {
        if let Some(rest) = spec.strip_prefix("hf:") {
            let mut parts = rest.splitn(3, '/');
            let (owner, repo, file) = (parts.next(), parts.next(), parts.next());
            match (owner, repo, file) {
                (Some(o), Some(r), Some(f)) if !o.is_empty() && !r.is_empty() && !f.is_empty() => {
                    Ok(ModelSource::Hub {
                        repo: format!("{o}/{r}"),
                        file: f.to_owned(),
                    })
                }
                _ => bail!("a Hugging Face model is written hf:OWNER/REPO/FILE.gguf, not {spec:?}"),
            }
        } else if spec.starts_with("http://") || spec.starts_with("https://") {
            Ok(ModelSource::Url(spec.to_owned()))
        } else {
            Ok(ModelSource::Path(PathBuf::from(spec)))
        }
    }

    /// A short name for the model: the file name without `.gguf`.
    pub fn display_name(&self) -> String {
        let name = match self {
            ModelSource::Path(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ModelSource::Url(u) => u
                .rsplit('/')
                .next()
                .unwrap_or(u)
                .split('?')
                .next()
                .unwrap_or("")
                .to_owned(),
            ModelSource::Hub { file, .. } => file.rsplit('/').next().unwrap_or(file).to_owned(),
        };
        name.strip_suffix(".gguf").unwrap_or(&name).to_owned()
    }

    /// Returns a local path to the model, downloading it into `cache_dir` first if needed.
    pub async fn fetch(&self, cache_dir: &Path, progress: bool) -> Result<PathBuf> {
        match self {
            ModelSource::Path(p) => {
                if !p.is_file() {
                    bail!("model file {} does not exist", p.display());
                }
                Ok(p.clone())
            }
            ModelSource::Url(url) => download(url, cache_dir, progress).await,
            ModelSource::Hub { repo, file } => {
                let api = hf_hub::api::tokio::ApiBuilder::from_env()
                    .with_progress(progress)
                    .build()
                    .context("setting up the Hugging Face Hub client")?;
                let repo_api = api.model(repo.clone());
                match tokio::time::timeout(HUB_TIMEOUT, repo_api.get(file)).await {
                    Ok(Ok(path)) => Ok(path),
                    Ok(Err(e)) => bail!(
                        "could not fetch {file} from the Hugging Face Hub repository {repo}: {e}"
                    ),
                    Err(_) => bail!(
                        "fetching {file} from the Hugging Face Hub repository {repo} took longer than {}s",
                        HUB_TIMEOUT.as_secs()
                    ),
                }
            }
        }
    }
}

/// The cache path of a URL: a hash of the URL and its last path segment.
pub fn url_cache_path(url: &str, cache_dir: &Path) -> PathBuf {
    let digest = Sha256::digest(url.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name = url
        .rsplit('/')
        .next()
        .unwrap_or("model")
        .split('?')
        .next()
        .unwrap_or("model");
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache_dir.join(format!("url-{hex}-{name}"))
}

async fn download(url: &str, cache_dir: &Path, progress: bool) -> Result<PathBuf> {
    let dest = url_cache_path(url, cache_dir);
    if dest.is_file() {
        return Ok(dest);
    }
    tokio::fs::create_dir_all(cache_dir)
        .await
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(NETWORK_TIMEOUT)
        .read_timeout(NETWORK_TIMEOUT)
        .build()
        .context("setting up the HTTP client")?;
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("downloading {url}"))?;
    if !resp.status().is_success() {
        bail!("downloading {url}: the server answered {}", resp.status());
    }
    let total = resp.content_length();
    let bar = crate::progress::bytes_bar(progress, total, "downloading");
    let partial = dest.with_extension("partial");
    let mut out = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut stream = resp.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("downloading {url}"))?;
        out.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        got += chunk.len() as u64;
        bar.set_position(got);
    }
    out.flush()
        .await
        .with_context(|| format!("writing {}", partial.display()))?;
    drop(out);
    bar.finish_and_clear();
    if let Some(total) = total.filter(|&t| t != got) {
        bail!("downloading {url}: got {got} of {total} bytes");
    }
    tokio::fs::rename(&partial, &dest)
        .await
        .with_context(|| format!("renaming {}", partial.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            ModelSource::parse("m.gguf").unwrap(),
            ModelSource::Path("m.gguf".into())
        );
        assert_eq!(
            ModelSource::parse("https://x/y/m.gguf").unwrap(),
            ModelSource::Url("https://x/y/m.gguf".into())
        );
        assert_eq!(
            ModelSource::parse("hf:owner/repo/dir/m.gguf").unwrap(),
            ModelSource::Hub {
                repo: "owner/repo".into(),
                file: "dir/m.gguf".into()
            }
        );
        assert!(ModelSource::parse("hf:owner/repo").is_err());
        assert_eq!(
            ModelSource::parse("hf:a/b/c/Model.Q4.gguf")
                .unwrap()
                .display_name(),
            "Model.Q4"
        );
    }

    #[test]
    fn url_cache_names_are_safe_and_distinct() {
        let dir = Path::new("/c");
        let a = url_cache_path("http://h/a/m.gguf?x=1", dir);
        let b = url_cache_path("http://h/b/m.gguf", dir);
        assert_ne!(a, b);
        assert!(
            a.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with("-m.gguf")
        );
    }
}
