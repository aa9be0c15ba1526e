//! GCP: upload `gcp-disk.tar.gz` to GCS, create an image with the guest OS features for SEV-SNP
//! and TDX (and the owner's Secure Boot keys), open the firewall, reserve a static external IP,
//! create the confidential instance on it, then wait for the agent and verify the VM. Seed:
//! automata-linux `scripts/make_gcp_vm.sh`. Machine types per TEE are [`sizes::GCP`].

use anyhow::{bail, Result};

use super::command::PlannedCommand;
use super::keys::SecureBootKeys;
use super::options::{Cloud, DeployOptions, Tee};
use super::{sizes, verdict};

const DEFAULT_VM_NAME: &str = "cvm-test";
const DEFAULT_ZONE: &str = "asia-southeast1-b";
/// C3 is GCP's TDX family, N2D (AMD Milan or later) its SEV-SNP family.
const DEFAULT_TDX_MACHINE: &str = "c3-standard-4";
const DEFAULT_SNP_MACHINE: &str = "n2d-standard-2";
/// SEV-SNP on N2D needs Milan or newer; GCP's documented flag for it.
const SNP_MIN_CPU_PLATFORM: &str = "AMD Milan";
/// Guest OS features of the image: UEFI boot, gVNIC and multiqueue virtio-scsi drivers, usable
/// under both SEV-SNP and TDX (the same image serves both, as in the seed).
const GUEST_OS_FEATURES: &str =
    "UEFI_COMPATIBLE,GVNIC,VIRTIO_SCSI_MULTIQUEUE,SEV_SNP_CAPABLE,TDX_CAPABLE";

/// The validated names of one GCP deployment.
struct Target<'a> {
    project: &'a str,
    bucket: &'a str,
    vm: &'a str,
    zone: &'a str,
    tee: Tee,
    machine: &'a str,
    artifact: String,
    /// `gs://bucket/vm.tar.gz`
    object: String,
    image: String,
    /// Firewall rule and network tag.
    rule: String,
    address: String,
}

pub(super) fn plan(opts: &DeployOptions, keys: &SecureBootKeys) -> Result<Vec<PlannedCommand>> {
    let t = Target::new(opts)?;
    let mut cmds = Vec::new();
    if opts.create_bucket {
        cmds.push(t.create_bucket());
    }
    cmds.push(t.upload());
    cmds.push(t.create_image(keys));
    cmds.push(t.firewall(&opts.ports()));
    cmds.extend(t.static_ip());
    cmds.push(t.create_instance(opts.data_disk_gb));
    cmds.extend(verdict::steps(Cloud::Gcp, opts, "IP")?);
    Ok(cmds)
}

impl<'a> Target<'a> {
    fn new(opts: &'a DeployOptions) -> Result<Self> {
        let project =
            opts.required(&opts.project, "--project", "the GCP project to deploy into")?;
        let bucket = opts.required(
            &opts.bucket,
            "--bucket",
            "a GCS bucket to stage the image in",
        )?;
        let vm = DeployOptions::or_default(&opts.vm_name, DEFAULT_VM_NAME);
        check_name(vm)?;
        let zone = DeployOptions::or_default(&opts.region, DEFAULT_ZONE);
        let tee = opts.tee.unwrap_or(Tee::Tdx);
        let default_machine = match tee {
            Tee::Tdx => DEFAULT_TDX_MACHINE,
            Tee::Snp => DEFAULT_SNP_MACHINE,
        };
        let machine = DeployOptions::or_default(&opts.machine_type, default_machine);
        sizes::GCP.check_machine(machine, tee)?;
        let artifact = opts.built_file("gcp-disk.tar.gz", "gcp")?;
        Ok(Self {
            project,
            bucket,
            vm,
            zone,
            tee,
            machine,
            artifact: artifact.to_string_lossy().into_owned(),
            object: format!("gs://{bucket}/{vm}.tar.gz"),
            image: format!("{vm}-image"),
            rule: format!("{vm}-ingress"),
            address: format!("{vm}-ip"),
        })
    }

    /// A `gcloud` command in the project.
    fn gcloud(&self, description: String, command: &[&str]) -> PlannedCommand {
        PlannedCommand::new("gcloud", description)
            .args(command.iter().copied())
            .eq("--project", self.project)
    }

    fn create_bucket(&self) -> PlannedCommand {
        let bucket = self.bucket;
        self.gcloud(
            format!("Create the staging bucket gs://{bucket}"),
            &["storage", "buckets", "create", &format!("gs://{bucket}")],
        )
        .eq("--location", zone_region(self.zone))
    }

    fn upload(&self) -> PlannedCommand {
        self.gcloud(
            format!("Upload {} to {}", self.artifact, self.object),
            &["storage", "cp", &self.artifact, &self.object],
        )
    }

    fn create_image(&self, keys: &SecureBootKeys) -> PlannedCommand {
        let what = match keys {
            SecureBootKeys::Owner { .. } => "with the owner's Secure Boot PK/KEK/db",
            SecureBootKeys::PlatformDefault => {
                "with GCP's default Secure Boot keys (no out/secure-boot/{PK,KEK,db}.der found)"
            }
        };
        let mut c = self
            .gcloud(
                format!("Create image {} from {} {what}", self.image, self.object),
                &["compute", "images", "create", &self.image],
            )
            .eq("--source-uri", &self.object)
            .eq("--guest-os-features", GUEST_OS_FEATURES)
            .eq("--storage-location", storage_location(self.zone));
        if let SecureBootKeys::Owner { pk, kek, db, .. } = keys {
            c = c
                .eq("--platform-key-file", pk.display())
                .eq("--key-exchange-key-file", kek.display())
                .eq("--signature-database-file", db.display());
        }
        c
    }

    fn firewall(&self, ports: &[u16]) -> PlannedCommand {
        let rule = &self.rule;
        self.gcloud(
            format!("Allow inbound TCP {ports:?} to instances tagged {rule}"),
            &["compute", "firewall-rules", "create", rule],
        )
        .eq("--network", "default")
        .eq("--direction", "INGRESS")
        .eq("--priority", 1000)
        .eq(
            "--allow",
            ports
                .iter()
                .map(|p| format!("tcp:{p}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .eq("--target-tags", rule)
    }

    /// Reserve a static external IP in the zone's region and capture its address.
    fn static_ip(&self) -> [PlannedCommand; 2] {
        let (address, region) = (&self.address, zone_region(self.zone));
        [
            self.gcloud(
                format!("Reserve the static external IP {address} in {region}"),
                &["compute", "addresses", "create", address],
            )
            .eq("--region", region),
            self.gcloud(
                "Look up the static IP's address".into(),
                &["compute", "addresses", "describe", address],
            )
            .eq("--region", region)
            .eq("--format", "value(address)")
            .capture("IP"),
        ]
    }

    fn create_instance(&self, data_disk_gb: Option<u32>) -> PlannedCommand {
        let (vm, machine, zone, tee) = (self.vm, self.machine, self.zone, self.tee);
        let mut create = self
            .gcloud(
                format!(
                    "Create the {tee} confidential VM {vm} ({machine}, {zone}) with vTPM and Secure Boot"
                ),
                &["compute", "instances", "create", vm],
            )
            .eq("--zone", zone)
            .eq("--machine-type", machine)
            .eq(
                "--confidential-compute-type",
                match tee {
                    Tee::Tdx => "TDX",
                    Tee::Snp => "SEV_SNP",
                },
            );
        if tee == Tee::Snp {
            create = create.eq("--min-cpu-platform", SNP_MIN_CPU_PLATFORM);
        }
        create = create
            // Confidential VMs cannot live-migrate.
            .eq("--maintenance-policy", "TERMINATE")
            .eq("--image-project", self.project)
            .eq("--image", &self.image)
            .args([
                "--shielded-secure-boot",
                "--shielded-vtpm",
                "--shielded-integrity-monitoring",
            ])
            .eq("--tags", &self.rule)
            .eq("--address", &self.address)
            // Serial output to Cloud Logging for boot diagnosis; the interactive serial console stays off.
            .eq("--metadata", "serial-port-logging-enable=true");
        if let Some(gb) = data_disk_gb {
            create = create.eq(
                "--create-disk",
                format!("name={vm}-data,size={gb}GB,device-name=data,auto-delete=yes"),
            );
        }
        create
    }
}

/// Multi-region that holds the image, from the zone's continent (the seed's rule).
fn storage_location(zone: &str) -> &'static str {
    if zone.starts_with("europe") {
        "eu"
    } else if zone.starts_with("us")
        || zone.starts_with("northamerica")
        || zone.starts_with("southamerica")
    {
        "us"
    } else {
        "asia"
    }
}

/// `asia-southeast1-b` → `asia-southeast1`.
fn zone_region(zone: &str) -> &str {
    match zone.rsplit_once('-') {
        Some((region, suffix)) if suffix.len() == 1 => region,
        _ => zone,
    }
}

/// GCE resource names: `[a-z]([-a-z0-9]{0,61}[a-z0-9])?` (the image name adds "-image").
fn check_name(vm: &str) -> Result<()> {
    let ok = vm.len() <= 56
        && vm.starts_with(|c: char| c.is_ascii_lowercase())
        && !vm.ends_with('-')
        && vm
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("--vm-name {vm:?} is not a valid GCE name: lowercase letters, digits and '-', starting with a letter, at most 56 characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{lines, out_dir, verdict_lines};
    use super::super::{plan as plan_for, Cloud};
    use super::*;

    #[test]
    fn defaults_without_keys() -> Result<()> {
        let out = out_dir("gcp-default", false, None);
        let opts = DeployOptions {
            project: Some("proj".into()),
            bucket: Some("bkt".into()),
            out_dir: out.clone(),
            ..Default::default()
        };
        let cmds = plan_for(Cloud::Gcp, &opts)?;
        let o = out.display();
        let verdict = verdict_lines(&out, "gcp", "IP");
        assert_eq!(
            lines(&cmds),
            [
                format!("gcloud storage cp {o}/gcp-disk.tar.gz gs://bkt/cvm-test.tar.gz --project=proj"),
                "gcloud compute images create cvm-test-image --project=proj --source-uri=gs://bkt/cvm-test.tar.gz \
                 --guest-os-features=UEFI_COMPATIBLE,GVNIC,VIRTIO_SCSI_MULTIQUEUE,SEV_SNP_CAPABLE,TDX_CAPABLE \
                 --storage-location=asia".to_string(),
                "gcloud compute firewall-rules create cvm-test-ingress --project=proj --network=default \
                 --direction=INGRESS --priority=1000 --allow=tcp:8000 --target-tags=cvm-test-ingress".to_string(),
                "gcloud compute addresses create cvm-test-ip --project=proj --region=asia-southeast1".to_string(),
                "IP=$(gcloud compute addresses describe cvm-test-ip --project=proj --region=asia-southeast1 \
                 '--format=value(address)')".to_string(),
                "gcloud compute instances create cvm-test --project=proj --zone=asia-southeast1-b \
                 --machine-type=c3-standard-4 --confidential-compute-type=TDX --maintenance-policy=TERMINATE \
                 --image-project=proj --image=cvm-test-image --shielded-secure-boot --shielded-vtpm \
                 --shielded-integrity-monitoring --tags=cvm-test-ingress --address=cvm-test-ip \
                 --metadata=serial-port-logging-enable=true".to_string(),
                verdict[0].clone(),
                verdict[1].clone(),
            ]
        );
        assert!(cmds[1].description.contains("default Secure Boot keys"));
        Ok(())
    }

    #[test]
    fn snp_with_owner_keys_ports_data_disk_and_bucket_creation() -> Result<()> {
        let out = out_dir("gcp-full", true, None);
        let opts = DeployOptions {
            tee: Some(Tee::Snp),
            vm_name: Some("attest-1".into()),
            region: Some("europe-west4-a".into()),
            project: Some("proj".into()),
            bucket: Some("bkt".into()),
            create_bucket: true,
            additional_ports: vec![443, 8000, 80],
            data_disk_gb: Some(50),
            out_dir: out.clone(),
            ..Default::default()
        };
        let cmds = plan_for(Cloud::Gcp, &opts)?;
        let o = out.display();
        let verdict = verdict_lines(&out, "gcp", "IP");
        assert_eq!(
            lines(&cmds),
            [
                "gcloud storage buckets create gs://bkt --project=proj --location=europe-west4".to_string(),
                format!("gcloud storage cp {o}/gcp-disk.tar.gz gs://bkt/attest-1.tar.gz --project=proj"),
                format!(
                    "gcloud compute images create attest-1-image --project=proj --source-uri=gs://bkt/attest-1.tar.gz \
                     --guest-os-features=UEFI_COMPATIBLE,GVNIC,VIRTIO_SCSI_MULTIQUEUE,SEV_SNP_CAPABLE,TDX_CAPABLE \
                     --storage-location=eu --platform-key-file={o}/secure-boot/PK.der \
                     --key-exchange-key-file={o}/secure-boot/KEK.der --signature-database-file={o}/secure-boot/db.der"
                ),
                "gcloud compute firewall-rules create attest-1-ingress --project=proj --network=default \
                 --direction=INGRESS --priority=1000 --allow=tcp:8000,tcp:443,tcp:80 --target-tags=attest-1-ingress".to_string(),
                "gcloud compute addresses create attest-1-ip --project=proj --region=europe-west4".to_string(),
                "IP=$(gcloud compute addresses describe attest-1-ip --project=proj --region=europe-west4 \
                 '--format=value(address)')".to_string(),
                "gcloud compute instances create attest-1 --project=proj --zone=europe-west4-a \
                 --machine-type=n2d-standard-2 --confidential-compute-type=SEV_SNP '--min-cpu-platform=AMD Milan' \
                 --maintenance-policy=TERMINATE --image-project=proj --image=attest-1-image --shielded-secure-boot \
                 --shielded-vtpm --shielded-integrity-monitoring --tags=attest-1-ingress --address=attest-1-ip \
                 --metadata=serial-port-logging-enable=true \
                 --create-disk=name=attest-1-data,size=50GB,device-name=data,auto-delete=yes".to_string(),
                verdict[0].clone(),
                verdict[1].clone(),
            ]
        );
        assert!(cmds[2].description.contains("owner's Secure Boot"));
        Ok(())
    }

    #[test]
    fn required_options_and_mismatches_are_clear_errors() {
        let out = out_dir("gcp-err", false, None);
        let base = DeployOptions {
            project: Some("p".into()),
            bucket: Some("b".into()),
            out_dir: out,
            ..Default::default()
        };
        let err = |o: DeployOptions| format!("{:#}", plan_for(Cloud::Gcp, &o).unwrap_err());
        assert!(err(DeployOptions {
            project: None,
            ..base.clone()
        })
        .contains("missing required option --project"));
        assert!(err(DeployOptions {
            bucket: None,
            ..base.clone()
        })
        .contains("missing required option --bucket"));
        assert!(err(DeployOptions {
            tee: Some(Tee::Tdx),
            machine_type: Some("n2d-standard-4".into()),
            ..base.clone()
        })
        .contains("cannot run TDX"));
        assert!(err(DeployOptions {
            vm_name: Some("cvm_test".into()),
            ..base
        })
        .contains("not a valid GCE name"));
    }
}
