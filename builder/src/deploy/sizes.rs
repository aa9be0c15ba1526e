//! Which machine sizes (and, where the provider limits them, regions) can run each TEE: one table
//! per cloud, as the provider documents it. `deploy --help` prints the tables ([`help`]) and every
//! refusal quotes the matching one, so a plan that the cloud would reject after the upload and the
//! image import is refused before anything runs.
//!
//! Checked against the providers' documentation on 2026-12-07 ([`CHECKED`]); docs/deploy.md says
//! which page each table comes from. A size a provider adds later is refused until the table is
//! updated — on purpose: an unknown size is more often a typo or a family without the TEE.

use anyhow::{bail, Result};

use super::options::Tee;

/// When the tables were compared with the providers' documentation.
pub const CHECKED: &str = "2026-12-07";

/// One machine family of a table.
pub struct Family {
    /// The provider's name for the family (`DCasv5`, `m6a`, `N2D`).
    pub name: &'static str,
    /// The TEE it provides; `None` for a confidential family whose TEE cvm-image cannot attest
    /// (GCP's AMD SEV without SNP: no signed report).
    pub tee: Option<Tee>,
    /// The machine type with `{}` where the size goes (`Standard_DC{}as_v5`, `m6a.{}`); without
    /// `{}` the pattern is one exact machine type.
    pub pattern: &'static str,
    /// The sizes the provider lists for the TEE; empty = every size of the family.
    pub sizes: &'static [&'static str],
}

/// The sizes and regions of one cloud.
pub struct Table {
    pub cloud: &'static str,
    /// Where the lists come from.
    pub source: &'static str,
    pub families: &'static [Family],
    /// Regions the TEE is offered in; empty = not restricted by this table.
    pub regions: &'static [&'static str],
    /// Azure size names are case-insensitive; AWS and GCP names are not.
    pub ignore_case: bool,
}

/// AWS: SEV-SNP only (no TDX), on these sizes and in these regions.
pub const AWS: Table = Table {
    cloud: "aws",
    source: "AWS EC2 User Guide, \"AMD SEV-SNP for Amazon EC2 instances\", Requirements \
             (docs.aws.amazon.com/AWSEC2/latest/UserGuide/sev-snp.html)",
    families: &[
        Family {
            name: "m6a",
            tee: Some(Tee::Snp),
            pattern: "m6a.{}",
            sizes: &["large", "xlarge", "2xlarge", "4xlarge", "8xlarge"],
        },
        Family {
            name: "c6a",
            tee: Some(Tee::Snp),
            pattern: "c6a.{}",
            sizes: &[
                "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge",
            ],
        },
        Family {
            name: "r6a",
            tee: Some(Tee::Snp),
            pattern: "r6a.{}",
            sizes: &["large", "xlarge", "2xlarge", "4xlarge"],
        },
    ],
    regions: &["us-east-2", "eu-west-1"],
    ignore_case: false,
};

/// GCP: SEV-SNP on N2D (AMD Milan or later), TDX on C3 standard and the one-GPU A3. The other AMD
/// families offer plain SEV only. Zones are not checked here (gcloud refuses an unsupported zone
/// before anything is created).
pub const GCP: Table = Table {
    cloud: "gcp",
    source: "Google Cloud, Confidential VM \"Supported configurations\" \
             (cloud.google.com/confidential-computing/confidential-vm/docs/supported-configurations)",
    families: &[
        Family {
            name: "C3",
            tee: Some(Tee::Tdx),
            pattern: "c3-standard-{}",
            sizes: &[],
        },
        Family {
            name: "A3 High (1 GPU)",
            tee: Some(Tee::Tdx),
            pattern: "a3-highgpu-1g",
            sizes: &[],
        },
        Family {
            name: "N2D",
            tee: Some(Tee::Snp),
            pattern: "n2d-{}",
            sizes: &[],
        },
        Family {
            name: "C2D",
            tee: None,
            pattern: "c2d-{}",
            sizes: &[],
        },
        Family {
            name: "C3D",
            tee: None,
            pattern: "c3d-{}",
            sizes: &[],
        },
        Family {
            name: "C4D",
            tee: None,
            pattern: "c4d-{}",
            sizes: &[],
        },
    ],
    regions: &[],
    ignore_case: false,
};

const DC_V5_SIZES: &[&str] = &["2", "4", "8", "16", "32", "48", "64", "96"];
const EC_AS_V5_SIZES: &[&str] = &["2", "4", "8", "16", "20", "32", "48", "64", "96"];
const EC_ES_V5_SIZES: &[&str] = &["2", "4", "8", "16", "32", "48", "64", "128"];

/// Azure: the v5 confidential families, SEV-SNP (`as`/`ads`) and TDX (`es`/`eds`). Locations are
/// not checked here (az refuses a size a location lacks before anything is created).
pub const AZURE: Table = Table {
    cloud: "azure",
    source: "Microsoft Learn, Azure VM sizes: DCasv5/DCadsv5, ECasv5/ECadsv5, DCesv5/DCedsv5 and \
             ECesv5/ECedsv5 series (learn.microsoft.com/azure/virtual-machines/sizes)",
    families: &[
        Family {
            name: "DCasv5",
            tee: Some(Tee::Snp),
            pattern: "Standard_DC{}as_v5",
            sizes: DC_V5_SIZES,
        },
        Family {
            name: "DCadsv5",
            tee: Some(Tee::Snp),
            pattern: "Standard_DC{}ads_v5",
            sizes: DC_V5_SIZES,
        },
        Family {
            name: "ECasv5",
            tee: Some(Tee::Snp),
            pattern: "Standard_EC{}as_v5",
            sizes: EC_AS_V5_SIZES,
        },
        Family {
            name: "ECadsv5",
            tee: Some(Tee::Snp),
            pattern: "Standard_EC{}ads_v5",
            sizes: EC_AS_V5_SIZES,
        },
        Family {
            name: "DCesv5",
            tee: Some(Tee::Tdx),
            pattern: "Standard_DC{}es_v5",
            sizes: DC_V5_SIZES,
        },
        Family {
            name: "DCedsv5",
            tee: Some(Tee::Tdx),
            pattern: "Standard_DC{}eds_v5",
            sizes: DC_V5_SIZES,
        },
        Family {
            name: "ECesv5",
            tee: Some(Tee::Tdx),
            pattern: "Standard_EC{}es_v5",
            sizes: EC_ES_V5_SIZES,
        },
        Family {
            name: "ECedsv5",
            tee: Some(Tee::Tdx),
            pattern: "Standard_EC{}eds_v5",
            sizes: EC_ES_V5_SIZES,
        },
    ],
    regions: &[],
    ignore_case: true,
};

impl Family {
    /// The size part of `machine` when it is of this family (listed or not).
    fn size_of<'m>(&self, machine: &'m str, ignore_case: bool) -> Option<&'m str> {
        let eq = |a: &str, b: &str| {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        let Some((pre, post)) = self.pattern.split_once("{}") else {
            return eq(machine, self.pattern).then_some("");
        };
        if machine.len() <= pre.len() + post.len() || !machine.is_char_boundary(pre.len()) {
            return None;
        }
        let split = machine.len() - post.len();
        if !machine.is_char_boundary(split)
            || !eq(&machine[..pre.len()], pre)
            || !eq(&machine[split..], post)
        {
            return None;
        }
        Some(&machine[pre.len()..split])
    }

    fn lists(&self, size: &str) -> bool {
        self.sizes.is_empty() || self.sizes.contains(&size)
    }

    /// `m6a.{large, xlarge, 2xlarge}` / `c3-standard-*`.
    fn describe(&self) -> String {
        match self.pattern.split_once("{}") {
            None => self.pattern.to_string(),
            Some((pre, post)) if self.sizes.is_empty() => format!("{pre}*{post}"),
            Some((pre, post)) => format!("{pre}{{{}}}{post}", self.sizes.join(",")),
        }
    }
}

impl Table {
    fn families_for(&self, tee: Tee) -> impl Iterator<Item = &Family> {
        self.families.iter().filter(move |f| f.tee == Some(tee))
    }

    /// The allowed machine types for `tee`, one family per entry.
    fn allowed(&self, tee: Tee) -> String {
        let list: Vec<String> = self
            .families_for(tee)
            .map(|f| format!("{} {}", f.name, f.describe()))
            .collect();
        if list.is_empty() {
            format!("{} offers no {tee} machine types", self.cloud)
        } else {
            list.join("; ")
        }
    }

    fn quote(&self, tee: Tee) -> String {
        let regions = if self.regions.is_empty() {
            String::new()
        } else {
            format!(", in {}", self.regions.join(", "))
        };
        format!(
            "{} {tee} sizes: {}{regions} (from {}, checked {CHECKED})",
            self.cloud,
            self.allowed(tee),
            self.source
        )
    }

    /// The TEE a listed machine type provides.
    pub fn tee_of(&self, machine: &str) -> Option<Tee> {
        self.families.iter().find_map(|f| {
            f.size_of(machine, self.ignore_case)
                .filter(|size| f.lists(size))
                .and(f.tee)
        })
    }

    /// Refuses a machine type that cannot run `tee` on this cloud, quoting the table.
    pub fn check_machine(&self, machine: &str, tee: Tee) -> Result<()> {
        let found = self
            .families
            .iter()
            .find_map(|f| f.size_of(machine, self.ignore_case).map(|s| (f, s)));
        let why = match found {
            Some((f, size)) if f.tee == Some(tee) && f.lists(size) => return Ok(()),
            Some((f, _)) if f.tee == Some(tee) => {
                format!("{} runs {tee} only in the listed sizes", f.name)
            }
            Some((f, _)) => match f.tee {
                Some(other) => format!(
                    "it is not a {tee} confidential VM size but a {other} one ({})",
                    f.name
                ),
                None => format!(
                    "{} offers only AMD SEV, which has no signed report cvm-image can verify",
                    f.name
                ),
            },
            None => format!("it is not a {tee} confidential VM size"),
        };
        bail!(
            "--machine-type {machine} cannot run {tee} on {}: {why}. {}",
            self.cloud,
            self.quote(tee)
        )
    }

    /// Refuses a region the TEE is not offered in (when the table restricts regions).
    pub fn check_region(&self, region: &str, tee: Tee) -> Result<()> {
        if self.regions.is_empty() || self.regions.contains(&region) {
            return Ok(());
        }
        bail!(
            "--region {region} has no {tee} instances on {}. {}",
            self.cloud,
            self.quote(tee)
        )
    }
}

/// The three tables, for `deploy --help`.
pub fn help() -> String {
    let mut s = format!(
        "Confidential machine types per TEE (checked against the providers' documentation on {CHECKED}; \
         other sizes are refused before anything runs):\n"
    );
    for table in [&GCP, &AWS, &AZURE] {
        s.push_str(&format!("\n{} — {}\n", table.cloud, table.source));
        for tee in [Tee::Snp, Tee::Tdx] {
            s.push_str(&format!("  {tee}: {}\n", table.allowed(tee)));
        }
        if !table.regions.is_empty() {
            s.push_str(&format!("  regions: {}\n", table.regions.join(", ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(t: &Table, machine: &str, tee: Tee) -> String {
        t.check_machine(machine, tee).unwrap_err().to_string()
    }

    #[test]
    fn aws_snp_sizes_stop_where_aws_documents() {
        for ok in [
            "m6a.large",
            "m6a.8xlarge",
            "c6a.xlarge",
            "c6a.16xlarge",
            "r6a.large",
            "r6a.4xlarge",
        ] {
            AWS.check_machine(ok, Tee::Snp).unwrap();
        }
        for (above, family) in [
            ("m6a.12xlarge", "m6a"),
            ("c6a.24xlarge", "c6a"),
            ("r6a.8xlarge", "r6a"),
            ("m6a.metal", "m6a"),
        ] {
            let e = err(&AWS, above, Tee::Snp);
            assert!(
                e.contains(&format!("{family} runs SEV-SNP only in the listed sizes")),
                "{e}"
            );
            assert!(
                e.contains("m6a.{large,xlarge,2xlarge,4xlarge,8xlarge}"),
                "{e}"
            );
            assert!(e.contains("sev-snp.html"), "{e}");
        }
        let e = err(&AWS, "m5.large", Tee::Snp);
        assert!(e.contains("cannot run SEV-SNP on aws"), "{e}");
        assert!(AWS.check_machine("M6a.large", Tee::Snp).is_err());
        let e = err(&AWS, "m6a.large", Tee::Tdx);
        assert!(e.contains("aws offers no TDX machine types"), "{e}");
    }

    #[test]
    fn aws_regions_are_the_two_with_snp() {
        AWS.check_region("us-east-2", Tee::Snp).unwrap();
        AWS.check_region("eu-west-1", Tee::Snp).unwrap();
        let e = AWS
            .check_region("us-east-1", Tee::Snp)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--region us-east-1 has no SEV-SNP instances on aws"),
            "{e}"
        );
        assert!(e.contains("in us-east-2, eu-west-1"), "{e}");
        GCP.check_region("anything-1-a", Tee::Tdx).unwrap();
    }

    #[test]
    fn gcp_families_per_tee() {
        GCP.check_machine("c3-standard-4", Tee::Tdx).unwrap();
        GCP.check_machine("c3-standard-176", Tee::Tdx).unwrap();
        GCP.check_machine("a3-highgpu-1g", Tee::Tdx).unwrap();
        GCP.check_machine("n2d-standard-2", Tee::Snp).unwrap();
        GCP.check_machine("n2d-highmem-8", Tee::Snp).unwrap();
        let e = err(&GCP, "n2d-standard-4", Tee::Tdx);
        assert!(e.contains("cannot run TDX on gcp: it is not a TDX confidential VM size but a SEV-SNP one (N2D)"), "{e}");
        assert!(e.contains("C3 c3-standard-*"), "{e}");
        let e = err(&GCP, "c3d-standard-4", Tee::Snp);
        assert!(e.contains("C3D offers only AMD SEV"), "{e}");
        let e = err(&GCP, "c3-highmem-4", Tee::Tdx);
        assert!(e.contains("not a TDX confidential VM size"), "{e}");
        assert!(GCP.check_machine("a3-highgpu-8g", Tee::Tdx).is_err());
    }

    #[test]
    fn azure_dc_and_ec_families_of_both_tees() {
        for snp in [
            "Standard_DC2as_v5",
            "Standard_DC96ads_v5",
            "Standard_EC4as_v5",
            "Standard_EC20as_v5",
            "Standard_EC96ads_v5",
            "standard_ec8as_v5",
        ] {
            AZURE.check_machine(snp, Tee::Snp).unwrap();
        }
        for tdx in [
            "Standard_DC2es_v5",
            "Standard_DC64eds_v5",
            "Standard_EC4es_v5",
            "Standard_EC128es_v5",
            "Standard_EC128eds_v5",
        ] {
            AZURE.check_machine(tdx, Tee::Tdx).unwrap();
        }
        let e = err(&AZURE, "Standard_EC4es_v5", Tee::Snp);
        assert!(e.contains("but a TDX one (ECesv5)"), "{e}");
        let e = err(&AZURE, "Standard_EC128as_v5", Tee::Snp);
        assert!(
            e.contains("ECasv5 runs SEV-SNP only in the listed sizes"),
            "{e}"
        );
        let e = err(&AZURE, "Standard_D2s_v5", Tee::Tdx);
        assert!(e.contains("not a TDX confidential VM size"), "{e}");
        assert!(
            e.contains("ECedsv5 Standard_EC{2,4,8,16,32,48,64,128}eds_v5"),
            "{e}"
        );
    }

    #[test]
    fn help_lists_every_table_with_its_source() {
        let h = help();
        for t in [&GCP, &AWS, &AZURE] {
            assert!(h.contains(t.source), "{h}");
        }
        assert!(h.contains("regions: us-east-2, eu-west-1"), "{h}");
        assert!(h.contains(CHECKED));
    }
}
