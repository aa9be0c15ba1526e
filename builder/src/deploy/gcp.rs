//! GCP: upload `gcp-disk.tar.gz` to GCS, create an image with the guest OS features for SEV-SNP
//! and TDX (and the owner's Secure Boot keys), open the firewall, create the confidential instance.
//! Seed: automata-linux `scripts/make_gcp_vm.sh`.

use anyhow::{bail, Result};

use super::{DeployOptions, PlannedCommand, SecureBootKeys, Tee};

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

pub(super) fn plan(opts: &DeployOptions, keys: &SecureBootKeys) -> Result<Vec<PlannedCommand>> {
    let project = opts.required(&opts.project, "--project", "the GCP project to deploy into")?;
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
    check_machine(machine, tee)?;
    let artifact = opts.artifact("gcp-disk.tar.gz", "gcp")?;
    let object = format!("gs://{bucket}/{vm}.tar.gz");
    let image = format!("{vm}-image");
    let rule = format!("{vm}-ingress");

    let mut cmds = Vec::new();
    if opts.create_bucket {
        cmds.push(
            PlannedCommand::new("gcloud", format!("Create the staging bucket gs://{bucket}"))
                .args(["storage", "buckets", "create", &format!("gs://{bucket}")])
                .eq("--project", project)
                .eq("--location", zone_region(zone)),
        );
    }
    cmds.push(
        PlannedCommand::new(
            "gcloud",
            format!("Upload {} to {object}", artifact.display()),
        )
        .args(["storage", "cp", &artifact.to_string_lossy(), &object])
        .eq("--project", project),
    );
    cmds.push(image_create(project, &image, &object, zone, keys));
    cmds.push(
        PlannedCommand::new(
            "gcloud",
            format!(
                "Allow inbound TCP {:?} to instances tagged {rule}",
                opts.ports()
            ),
        )
        .args(["compute", "firewall-rules", "create", &rule])
        .eq("--project", project)
        .eq("--network", "default")
        .eq("--direction", "INGRESS")
        .eq("--priority", 1000)
        .eq(
            "--allow",
            opts.ports()
                .iter()
                .map(|p| format!("tcp:{p}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .eq("--target-tags", &rule),
    );
    let mut create = PlannedCommand::new(
        "gcloud",
        format!(
            "Create the {tee} confidential VM {vm} ({machine}, {zone}) with vTPM and Secure Boot"
        ),
    )
    .args(["compute", "instances", "create", vm])
    .eq("--project", project)
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
        .eq("--image-project", project)
        .eq("--image", &image)
        .args([
            "--shielded-secure-boot",
            "--shielded-vtpm",
            "--shielded-integrity-monitoring",
        ])
        .eq("--tags", &rule)
        // Serial output to Cloud Logging for boot diagnosis; the interactive serial console stays off.
        .eq("--metadata", "serial-port-logging-enable=true");
    if let Some(gb) = opts.data_disk_gb {
        create = create.eq(
            "--create-disk",
            format!("name={vm}-data,size={gb}GB,device-name=data,auto-delete=yes"),
        );
    }
    cmds.push(create);
    Ok(cmds)
}

fn image_create(
    project: &str,
    image: &str,
    object: &str,
    zone: &str,
    keys: &SecureBootKeys,
) -> PlannedCommand {
    let what = match keys {
        SecureBootKeys::Owner { .. } => "with the owner's Secure Boot PK/KEK/db",
        SecureBootKeys::PlatformDefault => {
            "with GCP's default Secure Boot keys (no out/secure-boot/{PK,KEK,db}.der found)"
        }
    };
    let mut c = PlannedCommand::new(
        "gcloud",
        format!("Create image {image} from {object} {what}"),
    )
    .args(["compute", "images", "create", image])
    .eq("--project", project)
    .eq("--source-uri", object)
    .eq("--guest-os-features", GUEST_OS_FEATURES)
    .eq("--storage-location", storage_location(zone));
    if let SecureBootKeys::Owner { pk, kek, db, .. } = keys {
        c = c
            .eq("--platform-key-file", pk.display())
            .eq("--key-exchange-key-file", kek.display())
            .eq("--signature-database-file", db.display());
    }
    c
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

/// Refuses a machine family that cannot run the asked TEE (the VM would fail to create).
fn check_machine(machine: &str, tee: Tee) -> Result<()> {
    let family = machine.split('-').next().unwrap_or_default();
    let fits = match tee {
        Tee::Tdx => family == "c3",
        Tee::Snp => family == "n2d",
    };
    if !fits {
        bail!("--machine-type {machine} cannot run {tee} on GCP: use c3-* for TDX or n2d-* for SEV-SNP");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{lines, out_dir};
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
        assert_eq!(
            lines(&cmds),
            [
                format!("gcloud storage cp {o}/gcp-disk.tar.gz gs://bkt/cvm-test.tar.gz --project=proj"),
                "gcloud compute images create cvm-test-image --project=proj --source-uri=gs://bkt/cvm-test.tar.gz \
                 --guest-os-features=UEFI_COMPATIBLE,GVNIC,VIRTIO_SCSI_MULTIQUEUE,SEV_SNP_CAPABLE,TDX_CAPABLE \
                 --storage-location=asia".to_string(),
                "gcloud compute firewall-rules create cvm-test-ingress --project=proj --network=default \
                 --direction=INGRESS --priority=1000 --allow=tcp:8000 --target-tags=cvm-test-ingress".to_string(),
                "gcloud compute instances create cvm-test --project=proj --zone=asia-southeast1-b \
                 --machine-type=c3-standard-4 --confidential-compute-type=TDX --maintenance-policy=TERMINATE \
                 --image-project=proj --image=cvm-test-image --shielded-secure-boot --shielded-vtpm \
                 --shielded-integrity-monitoring --tags=cvm-test-ingress --metadata=serial-port-logging-enable=true".to_string(),
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
                "gcloud compute instances create attest-1 --project=proj --zone=europe-west4-a \
                 --machine-type=n2d-standard-2 --confidential-compute-type=SEV_SNP '--min-cpu-platform=AMD Milan' \
                 --maintenance-policy=TERMINATE --image-project=proj --image=attest-1-image --shielded-secure-boot \
                 --shielded-vtpm --shielded-integrity-monitoring --tags=attest-1-ingress \
                 --metadata=serial-port-logging-enable=true \
                 --create-disk=name=attest-1-data,size=50GB,device-name=data,auto-delete=yes".to_string(),
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
