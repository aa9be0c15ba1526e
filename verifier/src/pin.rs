//! No rollback: what a verifier pins about the image a golden file describes (its `image`
//! reference: name, version, UKI hash, security version), checked before any evidence.
//!
//! The adversary is a malicious host — or whoever can write the VM's disk or sits in front of its
//! agent — that boots an image its owner once built and signed but has since replaced (an old,
//! vulnerable or debug build) and hands the verifier that image's golden file: the one embedded in
//! the old image's ESP (`--golden-from-agent`) or a copy kept from back then. Its signature is
//! good — every golden file the key ever signed verifies — and the VM matches it PCR for PCR, so
//! neither the signature nor the measurement comparison can tell. Only a verifier that says which
//! image it wants ([`ImagePin`]) refuses it. The pins are statements about the golden file; the
//! measurement comparison then ties the VM to that file.

use crate::golden::ImageRef;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// What the golden file's `image` must say; every `None` is not checked.
#[derive(Debug, Clone, Default)]
pub struct ImagePin {
    /// `image.name` must equal it (the spec's `[image] name`).
    pub name: Option<String>,
    /// `image.version` must be at least it ([`Version`] order).
    pub min_version: Option<Version>,
    /// `image.uki_sha256` must equal it.
    pub uki_sha256: Option<Sha256Hex>,
    /// `image.security_version` must be present and at least it.
    pub min_security_version: Option<u64>,
}

/// Why a golden file's image is not the pinned one: each names what the file says and what the
/// verifier asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error(
        "the golden file is for image {found:?}, not the expected {expected:?} (--expect-image)"
    )]
    OtherImage { expected: String, found: String },
    #[error(
        "the golden file is for {name} version {found}, older than the minimum version {min} \
         (--min-version): an older image's golden file is refused even when correctly signed"
    )]
    OlderVersion {
        name: String,
        found: String,
        min: String,
    },
    #[error(
        "the golden file's image version {found:?} cannot be compared with --min-version {min}: \
         {reason}"
    )]
    UncomparableVersion {
        found: String,
        min: String,
        reason: VersionError,
    },
    #[error(
        "the golden file is for the UKI with sha256 {found}, not the expected {expected} \
         (--expect-uki)"
    )]
    OtherUki { expected: String, found: String },
    #[error(
        "the golden file of {name} {version} has no image.security_version, so it cannot meet \
         --min-security-version {min} (set [image] security_version in the spec and rebuild)"
    )]
    NoSecurityVersion {
        name: String,
        version: String,
        min: u64,
    },
    #[error(
        "the golden file is for security version {found} of {name}, below the minimum {min} \
         (--min-security-version)"
    )]
    OlderSecurityVersion { name: String, found: u64, min: u64 },
}

impl ImagePin {
    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.min_version.is_none()
            && self.uki_sha256.is_none()
            && self.min_security_version.is_none()
    }

    /// Every pin `image` does not meet (empty when it meets them all).
    pub fn violations(&self, image: &ImageRef) -> Vec<PinError> {
        let mut out = vec![];
        if let Some(expected) = &self.name {
            if &image.name != expected {
                out.push(PinError::OtherImage {
                    expected: expected.clone(),
                    found: image.name.clone(),
                });
            }
        }
        if let Some(min) = &self.min_version {
            match image.version.parse::<Version>() {
                Ok(found) if found < *min => out.push(PinError::OlderVersion {
                    name: image.name.clone(),
                    found: image.version.clone(),
                    min: min.to_string(),
                }),
                Ok(_) => {}
                Err(reason) => out.push(PinError::UncomparableVersion {
                    found: image.version.clone(),
                    min: min.to_string(),
                    reason,
                }),
            }
        }
        if let Some(expected) = &self.uki_sha256 {
            if !image.uki_sha256.eq_ignore_ascii_case(&expected.0) {
                out.push(PinError::OtherUki {
                    expected: expected.0.clone(),
                    found: image.uki_sha256.clone(),
                });
            }
        }
        if let Some(min) = self.min_security_version {
            match image.security_version {
                None => out.push(PinError::NoSecurityVersion {
                    name: image.name.clone(),
                    version: image.version.clone(),
                    min,
                }),
                Some(found) if found < min => out.push(PinError::OlderSecurityVersion {
                    name: image.name.clone(),
                    found,
                    min,
                }),
                Some(_) => {}
            }
        }
        out
    }
}

/// A SHA-256 digest as 64 hex digits (stored lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(pub String);

/// Why a string is not a [`Sha256Hex`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a SHA-256 digest: 64 hex digits expected (e.g. from `sha256sum out/uki.efi`)"
)]
pub struct DigestError(pub String);

impl FromStr for Sha256Hex {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, DigestError> {
        let t = s.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256Hex(t.to_ascii_lowercase()))
        } else {
            Err(DigestError(s.to_string()))
        }
    }
}

/// An image version as `--min-version` compares it: dotted numbers with an optional leading `v`,
/// an optional `-PRE-RELEASE` and an optional `+BUILD` (semver's shape, any number of release
/// components).
///
/// Order: release components numerically, left to right, missing ones being 0 (`1.10 > 1.9`,
/// `1.2 = 1.2.0`); a version with a pre-release is below the same release without one
/// (`1.0.0-rc.1 < 1.0.0`), pre-releases compare as semver's (dot-separated identifiers, numeric
/// ones numerically and below alphanumeric ones, those in ASCII order, a longer list above its
/// prefix); `+BUILD` is ignored.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    release: Vec<u64>,
    pre: Vec<PreId>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PreId {
    // Declared first: numeric identifiers sort below alphanumeric ones.
    Num(u64),
    Alpha(String),
}

/// Why a string is not a [`Version`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("an empty version")]
    Empty,
    #[error("release component {component:?} of {version:?} is not a number (versions are dotted numbers such as 1.4.2)")]
    Release { version: String, component: String },
    #[error("pre-release identifier {identifier:?} of {version:?} is empty or not [0-9A-Za-z-]")]
    PreRelease { version: String, identifier: String },
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, VersionError> {
        let text = s.trim();
        let without_build = text.split_once('+').map_or(text, |(v, _)| v);
        let bare = without_build
            .strip_prefix(['v', 'V'])
            .unwrap_or(without_build);
        if bare.is_empty() {
            return Err(VersionError::Empty);
        }
        let (release, pre) = bare.split_once('-').unwrap_or((bare, ""));
        let release = release
            .split('.')
            .map(|c| {
                c.parse::<u64>()
                    .ok()
                    .filter(|_| c.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| VersionError::Release {
                        version: text.to_string(),
                        component: c.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pre = if bare.contains('-') {
            pre.split('.')
                .map(|id| pre_id(id, text))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![]
        };
        Ok(Version {
            text: text.to_string(),
            release,
            pre,
        })
    }
}

fn pre_id(id: &str, version: &str) -> Result<PreId, VersionError> {
    let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(VersionError::PreRelease {
            version: version.to_string(),
            identifier: id.to_string(),
        });
    }
    Ok(match id.parse::<u64>() {
        Ok(n) if id.bytes().all(|b| b.is_ascii_digit()) => PreId::Num(n),
        _ => PreId::Alpha(id.to_string()),
    })
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.release.len().max(other.release.len());
        let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        (0..len)
            .map(|i| at(&self.release, i).cmp(&at(&other.release, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn image(name: &str, version: &str, security_version: Option<u64>) -> ImageRef {
        ImageRef {
            name: name.into(),
            version: version.into(),
            uki_sha256: "ab".repeat(32),
            security_version,
        }
    }

    #[test]
    fn versions_compare_as_dotted_numbers_with_semver_pre_releases() {
        let ascending = [
            "0.9",
            "0.10.0-alpha",
            "0.10.0-alpha.1",
            "0.10.0-alpha.beta",
            "0.10.0-beta",
            "0.10.0-beta.2",
            "0.10.0-beta.11",
            "0.10.0-rc.1",
            "0.10.0",
            "0.10.1",
            "1.2",
            "1.9.9",
            "1.10",
            "2",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert!(v(pair[1]) > v(pair[0]), "{} > {}", pair[1], pair[0]);
        }
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v("v1.2.0"), v("1.2.0"));
        assert_eq!(v("1.2.0+build.7"), v("1.2.0"));
        assert_eq!(v("1.2.0").to_string(), "1.2.0");
    }

    #[test]
    fn malformed_versions_say_why() {
        assert_eq!("".parse::<Version>().unwrap_err(), VersionError::Empty);
        assert_eq!("v".parse::<Version>().unwrap_err(), VersionError::Empty);
        for bad in ["1..2", "1.x", "1.2.", "one", "1.-2", "+3"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        let e = "1.2-rc..1".parse::<Version>().unwrap_err();
        assert!(matches!(e, VersionError::PreRelease { .. }), "{e}");
        let e = "1.a".parse::<Version>().unwrap_err().to_string();
        assert!(e.contains("\"a\"") && e.contains("not a number"), "{e}");
    }

    #[test]
    fn sha256_hex_is_64_hex_digits_lower_cased() {
        let d: Sha256Hex = "AB".repeat(32).parse().unwrap();
        assert_eq!(d.0, "ab".repeat(32));
        assert!("ab".repeat(31).parse::<Sha256Hex>().is_err());
        assert!("zz".repeat(32).parse::<Sha256Hex>().is_err());
    }

    #[test]
    fn an_empty_pin_accepts_anything() {
        assert!(ImagePin::default().is_empty());
        assert!(ImagePin::default()
            .violations(&image("x", "not a version", None))
            .is_empty());
    }

    #[test]
    fn each_pin_refuses_naming_both_values() {
        let pin = ImagePin {
            name: Some("cvm-demo".into()),
            min_version: Some(v("0.2.0")),
            uki_sha256: Some("cd".repeat(32).parse().unwrap()),
            min_security_version: Some(3),
        };
        let all = pin.violations(&image("cvm-debug", "0.1.9", Some(2)));
        let text: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 4, "{text:#?}");
        let both = [
            ["\"cvm-debug\"", "\"cvm-demo\""],
            ["version 0.1.9", "minimum version 0.2.0"],
            [&"ab".repeat(32), &"cd".repeat(32)],
            ["security version 2", "minimum 3"],
        ];
        for (t, [found, wanted]) in text.iter().zip(both) {
            assert!(t.contains(found) && t.contains(wanted), "{t}");
        }

        // Met: the same name, a newer version, the UKI (any case), an equal security version.
        let mut ok = image("cvm-demo", "0.10.0", Some(3));
        ok.uki_sha256 = "CD".repeat(32);
        assert_eq!(pin.violations(&ok), []);

        // No security version at all, and a version that is not one.
        let e = pin.violations(&image("cvm-demo", "latest", None));
        assert!(
            matches!(&e[0], PinError::UncomparableVersion { found, .. } if found == "latest"),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| matches!(e, PinError::NoSecurityVersion { min: 3, .. })),
            "{e:?}"
        );
    }
}
