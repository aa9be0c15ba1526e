//! AWS: upload `aws-disk.vmdk` to S3, import it as an EBS snapshot (needs the `vmimport` service
//! role), register a UEFI + TPM 2.0 AMI (with the owner's UEFI variable store when present), open a
//! security group, allocate an Elastic IP, launch an SEV-SNP instance, attach the IP, then wait for
//! the agent and verify the VM. Seed: automata-linux `scripts/make_aws_vm.sh`. AWS offers no TDX
//! instances; SEV-SNP sizes and regions are [`sizes::AWS`].

use anyhow::{bail, Result};
use base64::Engine as _;

use super::command::PlannedCommand;
use super::keys::{read_key_file, SecureBootKeys};
use super::options::{Cloud, DeployOptions, Tee};
use super::{sizes, verdict};

const DEFAULT_VM_NAME: &str = "cvm-test";
const DEFAULT_REGION: &str = "us-east-2";
const DEFAULT_INSTANCE_TYPE: &str = "m6a.large";
const ROOT_DEVICE: &str = "/dev/xvda";
const DATA_DEVICE: &str = "/dev/sdb";

/// The validated names of one AWS deployment.
struct Target<'a> {
    vm: &'a str,
    region: &'a str,
    instance_type: &'a str,
    bucket: &'a str,
    /// The VMDK's path on this machine and its S3 key.
    artifact: String,
    key: String,
}

pub(super) fn plan(opts: &DeployOptions, keys: &SecureBootKeys) -> Result<Vec<PlannedCommand>> {
    let t = Target::new(opts)?;
    let mut cmds = Vec::new();
    if opts.create_bucket {
        cmds.push(t.create_bucket());
    }
    cmds.push(t.upload());
    cmds.extend(t.import_snapshot());
    cmds.push(t.register_image(keys)?);
    cmds.push(t.wait_for_image());
    cmds.extend(t.security_group(&opts.ports()));
    cmds.extend(t.elastic_ip());
    cmds.extend(t.launch(opts.data_disk_gb));
    cmds.extend(verdict::steps(Cloud::Aws, opts, "IP")?);
    Ok(cmds)
}

impl<'a> Target<'a> {
    fn new(opts: &'a DeployOptions) -> Result<Self> {
        if opts.tee == Some(Tee::Tdx) {
            bail!("AWS has no TDX instances: use --tee snp (m6a, c6a, r6a families)");
        }
        let bucket = opts.required(
            &opts.bucket,
            "--bucket",
            "an S3 bucket in the target region to stage the VMDK in",
        )?;
        let vm = DeployOptions::or_default(&opts.vm_name, DEFAULT_VM_NAME);
        let region = DeployOptions::or_default(&opts.region, DEFAULT_REGION);
        let instance_type = DeployOptions::or_default(&opts.machine_type, DEFAULT_INSTANCE_TYPE);
        sizes::AWS.check_machine(instance_type, Tee::Snp)?;
        sizes::AWS.check_region(region, Tee::Snp)?;
        let artifact = opts.built_file("aws-disk.vmdk", "aws")?;
        Ok(Self {
            vm,
            region,
            instance_type,
            bucket,
            artifact: artifact.to_string_lossy().into_owned(),
            key: format!("vms/{vm}.vmdk"),
        })
    }

    /// An `aws` command in the target region.
    fn aws(&self, description: String, command: &[&str]) -> PlannedCommand {
        PlannedCommand::new("aws", description)
            .args(command.iter().copied())
            .opt("--region", self.region)
    }

    fn create_bucket(&self) -> PlannedCommand {
        let b = self.bucket;
        self.aws(
            format!("Create the staging bucket s3://{b}"),
            &["s3", "mb", &format!("s3://{b}")],
        )
    }

    fn upload(&self) -> PlannedCommand {
        let (b, k) = (self.bucket, &self.key);
        self.aws(
            format!("Upload {} to s3://{b}/{k}", self.artifact),
            &["s3", "cp", &self.artifact, &format!("s3://{b}/{k}")],
        )
    }

    /// Import the VMDK as a snapshot, wait for it, and capture the snapshot id.
    fn import_snapshot(&self) -> [PlannedCommand; 3] {
        [
            self.aws(
                "Import the VMDK as an EBS snapshot (uses the vmimport role)".into(),
                &["ec2", "import-snapshot"],
            )
            .opt("--description", format!("cvm-image {}", self.vm))
            .opt(
                "--disk-container",
                format!(
                    "Format=VMDK,UserBucket={{S3Bucket={},S3Key={}}}",
                    self.bucket, self.key
                ),
            )
            .opt("--query", "ImportTaskId")
            .opt("--output", "text")
            .capture("IMPORT_TASK"),
            self.aws(
                "Wait for the snapshot import to complete".into(),
                &["ec2", "wait", "snapshot-imported"],
            )
            .opt("--import-task-ids", "${IMPORT_TASK}"),
            self.aws(
                "Look up the imported snapshot".into(),
                &["ec2", "describe-import-snapshot-tasks"],
            )
            .opt("--import-task-ids", "${IMPORT_TASK}")
            .opt(
                "--query",
                "ImportSnapshotTasks[0].SnapshotTaskDetail.SnapshotId",
            )
            .opt("--output", "text")
            .capture("SNAPSHOT"),
        ]
    }

    /// `register-image` for UEFI boot with NitroTPM 2.0. `--uefi-data` carries the owner's
    /// PK/KEK/db as AWS's UEFI variable store blob (`out/secure-boot/aws-uefi-data.bin`, base64
    /// text as python-uefivars writes it, or raw bytes which are encoded here).
    fn register_image(&self, keys: &SecureBootKeys) -> Result<PlannedCommand> {
        let blob = match keys {
            SecureBootKeys::Owner {
                aws_uefi_data: Some(path),
                ..
            } => Some(uefi_data_argument(&read_key_file(path)?)),
            SecureBootKeys::Owner {
                aws_uefi_data: None,
                ..
            } => {
                bail!("out/secure-boot has PK/KEK/db but no aws-uefi-data.bin: AWS needs the keys as a UEFI variable store blob")
            }
            SecureBootKeys::PlatformDefault => None,
        };
        let what = if blob.is_some() {
            "with the owner's Secure Boot keys (out/secure-boot/aws-uefi-data.bin)"
        } else {
            "with AWS's default UEFI variable store (no out/secure-boot keys: not enrolled with our keys)"
        };
        let image = format!("{}-image", self.vm);
        let mut c = self
            .aws(
                format!("Register AMI {image} (UEFI, TPM 2.0) {what}"),
                &["ec2", "register-image"],
            )
            .opt("--name", image)
            .opt("--architecture", "x86_64")
            .opt("--virtualization-type", "hvm")
            .opt("--root-device-name", ROOT_DEVICE)
            .opt(
                "--block-device-mappings",
                format!(
                    "DeviceName={ROOT_DEVICE},Ebs={{SnapshotId=${{SNAPSHOT}},DeleteOnTermination=true}}"
                ),
            )
            .arg("--ena-support")
            .opt("--boot-mode", "uefi")
            .opt("--tpm-support", "v2.0");
        if let Some(b) = blob {
            c = c.opt("--uefi-data", b);
        }
        Ok(c.opt("--query", "ImageId")
            .opt("--output", "text")
            .capture("IMAGE"))
    }

    fn wait_for_image(&self) -> PlannedCommand {
        self.aws(
            "Wait for the AMI to become available".into(),
            &["ec2", "wait", "image-available"],
        )
        .opt("--image-ids", "${IMAGE}")
    }

    /// The security group and one ingress rule per port.
    fn security_group(&self, ports: &[u16]) -> Vec<PlannedCommand> {
        let group = format!("{}-secgrp", self.vm);
        let mut cmds = vec![self
            .aws(
                format!("Create security group {group}"),
                &["ec2", "create-security-group"],
            )
            .opt("--group-name", &group)
            .opt("--description", format!("cvm-image {} ingress", self.vm))
            .opt("--query", "GroupId")
            .opt("--output", "text")
            .capture("SECURITY_GROUP")];
        for port in ports {
            cmds.push(
                self.aws(
                    format!("Allow inbound TCP {port}"),
                    &["ec2", "authorize-security-group-ingress"],
                )
                .opt("--group-id", "${SECURITY_GROUP}")
                .opt("--protocol", "tcp")
                .opt("--port", port.to_string())
                .opt("--cidr", "0.0.0.0/0"),
            );
        }
        cmds
    }

    /// A static public IP (Elastic IP): allocate it and capture its address.
    fn elastic_ip(&self) -> [PlannedCommand; 2] {
        [
            self.aws(
                format!("Allocate the Elastic IP of {} (static public IP)", self.vm),
                &["ec2", "allocate-address"],
            )
            .opt("--domain", "vpc")
            .opt(
                "--tag-specifications",
                format!(
                    "ResourceType=elastic-ip,Tags=[{{Key=Name,Value={}}}]",
                    self.vm
                ),
            )
            .opt("--query", "AllocationId")
            .opt("--output", "text")
            .capture("ALLOCATION"),
            self.aws(
                "Look up the Elastic IP's address".into(),
                &["ec2", "describe-addresses"],
            )
            .opt("--allocation-ids", "${ALLOCATION}")
            .opt("--query", "Addresses[0].PublicIp")
            .opt("--output", "text")
            .capture("IP"),
        ]
    }

    /// Launch the instance, wait until it runs, attach the Elastic IP.
    fn launch(&self, data_disk_gb: Option<u32>) -> [PlannedCommand; 3] {
        let (vm, it, region) = (self.vm, self.instance_type, self.region);
        let mut run = self
            .aws(
                format!("Launch the SEV-SNP confidential VM {vm} ({it}, {region}) with NitroTPM and UEFI"),
                &["ec2", "run-instances"],
            )
            .opt("--image-id", "${IMAGE}")
            .opt("--instance-type", it)
            .opt("--security-group-ids", "${SECURITY_GROUP}")
            .opt("--cpu-options", "AmdSevSnp=enabled")
            .opt(
                "--tag-specifications",
                format!("ResourceType=instance,Tags=[{{Key=Name,Value={vm}}}]"),
            );
        if let Some(gb) = data_disk_gb {
            run = run.opt(
                "--block-device-mappings",
                format!("DeviceName={DATA_DEVICE},Ebs={{VolumeSize={gb},VolumeType=gp3,DeleteOnTermination=true}}"),
            );
        }
        [
            run.opt("--query", "Instances[0].InstanceId")
                .opt("--output", "text")
                .capture("INSTANCE"),
            self.aws(
                "Wait for the instance to run".into(),
                &["ec2", "wait", "instance-running"],
            )
            .opt("--instance-ids", "${INSTANCE}"),
            self.aws(
                "Attach the Elastic IP to the instance".into(),
                &["ec2", "associate-address"],
            )
            .opt("--instance-id", "${INSTANCE}")
            .opt("--allocation-id", "${ALLOCATION}"),
        ]
    }
}

/// The blob as `--uefi-data` wants it: base64 text. A file that already is base64 text is used as
/// is (trimmed); anything else is encoded.
fn uefi_data_argument(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let trimmed = text.trim();
    let is_base64 = !trimmed.is_empty()
        && trimmed.len().is_multiple_of(4)
        && trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    if is_base64 {
        trimmed.to_string()
    } else {
        base64::engine::general_purpose::STANDARD.encode(content)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{lines, out_dir, verdict_lines};
    use super::super::{plan as plan_for, Cloud};
    use super::*;

    #[test]
    fn defaults_without_keys() -> Result<()> {
        let out = out_dir("aws-default", false, None);
        let opts = DeployOptions {
            bucket: Some("bkt".into()),
            out_dir: out.clone(),
            ..Default::default()
        };
        let cmds = plan_for(Cloud::Aws, &opts)?;
        let o = out.display();
        let verdict = verdict_lines(&out, "aws", "IP");
        assert_eq!(
            lines(&cmds),
            [
                format!("aws s3 cp {o}/aws-disk.vmdk s3://bkt/vms/cvm-test.vmdk --region us-east-2"),
                "IMPORT_TASK=$(aws ec2 import-snapshot --region us-east-2 --description 'cvm-image cvm-test' \
                 --disk-container 'Format=VMDK,UserBucket={S3Bucket=bkt,S3Key=vms/cvm-test.vmdk}' \
                 --query ImportTaskId --output text)".to_string(),
                "aws ec2 wait snapshot-imported --region us-east-2 --import-task-ids \"${IMPORT_TASK}\"".to_string(),
                "SNAPSHOT=$(aws ec2 describe-import-snapshot-tasks --region us-east-2 --import-task-ids \"${IMPORT_TASK}\" \
                 --query 'ImportSnapshotTasks[0].SnapshotTaskDetail.SnapshotId' --output text)".to_string(),
                "IMAGE=$(aws ec2 register-image --region us-east-2 --name cvm-test-image --architecture x86_64 \
                 --virtualization-type hvm --root-device-name /dev/xvda --block-device-mappings \
                 \"DeviceName=/dev/xvda,Ebs={SnapshotId=${SNAPSHOT},DeleteOnTermination=true}\" --ena-support \
                 --boot-mode uefi --tpm-support v2.0 --query ImageId --output text)".to_string(),
                "aws ec2 wait image-available --region us-east-2 --image-ids \"${IMAGE}\"".to_string(),
                "SECURITY_GROUP=$(aws ec2 create-security-group --region us-east-2 --group-name cvm-test-secgrp \
                 --description 'cvm-image cvm-test ingress' --query GroupId --output text)".to_string(),
                "aws ec2 authorize-security-group-ingress --region us-east-2 --group-id \"${SECURITY_GROUP}\" \
                 --protocol tcp --port 8000 --cidr 0.0.0.0/0".to_string(),
                "ALLOCATION=$(aws ec2 allocate-address --region us-east-2 --domain vpc \
                 --tag-specifications 'ResourceType=elastic-ip,Tags=[{Key=Name,Value=cvm-test}]' \
                 --query AllocationId --output text)".to_string(),
                "IP=$(aws ec2 describe-addresses --region us-east-2 --allocation-ids \"${ALLOCATION}\" \
                 --query 'Addresses[0].PublicIp' --output text)".to_string(),
                "INSTANCE=$(aws ec2 run-instances --region us-east-2 --image-id \"${IMAGE}\" --instance-type m6a.large \
                 --security-group-ids \"${SECURITY_GROUP}\" --cpu-options AmdSevSnp=enabled \
                 --tag-specifications 'ResourceType=instance,Tags=[{Key=Name,Value=cvm-test}]' \
                 --query 'Instances[0].InstanceId' --output text)".to_string(),
                "aws ec2 wait instance-running --region us-east-2 --instance-ids \"${INSTANCE}\"".to_string(),
                "aws ec2 associate-address --region us-east-2 --instance-id \"${INSTANCE}\" \
                 --allocation-id \"${ALLOCATION}\"".to_string(),
                verdict[0].clone(),
                verdict[1].clone(),
            ]
        );
        assert!(cmds[4].description.contains("default UEFI variable store"));
        Ok(())
    }

    #[test]
    fn owner_keys_ports_data_disk_region_and_bucket_creation() -> Result<()> {
        let out = out_dir("aws-full", true, Some(b"QUJD\n"));
        let opts = DeployOptions {
            tee: Some(Tee::Snp),
            vm_name: Some("node".into()),
            region: Some("eu-west-1".into()),
            machine_type: Some("c6a.xlarge".into()),
            bucket: Some("bkt".into()),
            create_bucket: true,
            additional_ports: vec![80, 443],
            data_disk_gb: Some(20),
            out_dir: out.clone(),
            ..Default::default()
        };
        let l = lines(&plan_for(Cloud::Aws, &opts)?);
        assert_eq!(l.len(), 18);
        assert_eq!(l[0], "aws s3 mb s3://bkt --region eu-west-1");
        assert_eq!(
            l[5],
            "IMAGE=$(aws ec2 register-image --region eu-west-1 --name node-image --architecture x86_64 \
             --virtualization-type hvm --root-device-name /dev/xvda --block-device-mappings \
             \"DeviceName=/dev/xvda,Ebs={SnapshotId=${SNAPSHOT},DeleteOnTermination=true}\" --ena-support \
             --boot-mode uefi --tpm-support v2.0 --uefi-data QUJD --query ImageId --output text)"
        );
        assert_eq!(l[8], "aws ec2 authorize-security-group-ingress --region eu-west-1 --group-id \"${SECURITY_GROUP}\" --protocol tcp --port 8000 --cidr 0.0.0.0/0");
        assert!(l[9].contains("--port 80 "), "{}", l[9]);
        assert!(l[10].contains("--port 443 "), "{}", l[10]);
        assert_eq!(
            l[13],
            "INSTANCE=$(aws ec2 run-instances --region eu-west-1 --image-id \"${IMAGE}\" --instance-type c6a.xlarge \
             --security-group-ids \"${SECURITY_GROUP}\" --cpu-options AmdSevSnp=enabled \
             --tag-specifications 'ResourceType=instance,Tags=[{Key=Name,Value=node}]' \
             --block-device-mappings 'DeviceName=/dev/sdb,Ebs={VolumeSize=20,VolumeType=gp3,DeleteOnTermination=true}' \
             --query 'Instances[0].InstanceId' --output text)"
        );
        assert_eq!(l[16..], verdict_lines(&out, "aws", "IP"));
        Ok(())
    }

    #[test]
    fn binary_uefi_data_is_base64_encoded() {
        assert_eq!(uefi_data_argument(&[0, 1, 2]), "AAEC");
        assert_eq!(uefi_data_argument(b"QUJD\n"), "QUJD");
    }

    #[test]
    fn tdx_wrong_family_missing_bucket_and_missing_blob_are_errors() {
        let out = out_dir("aws-err", false, None);
        let base = DeployOptions {
            bucket: Some("b".into()),
            out_dir: out,
            ..Default::default()
        };
        let err = |o: DeployOptions| format!("{:#}", plan_for(Cloud::Aws, &o).unwrap_err());
        assert!(err(DeployOptions {
            tee: Some(Tee::Tdx),
            ..base.clone()
        })
        .contains("no TDX"));
        assert!(err(DeployOptions {
            bucket: None,
            ..base.clone()
        })
        .contains("missing required option --bucket"));
        assert!(err(DeployOptions {
            machine_type: Some("m5.large".into()),
            ..base.clone()
        })
        .contains("cannot run SEV-SNP"));
        let e = err(DeployOptions {
            machine_type: Some("m6a.12xlarge".into()),
            ..base.clone()
        });
        assert!(
            e.contains("m6a runs SEV-SNP only in the listed sizes"),
            "{e}"
        );
        let e = err(DeployOptions {
            region: Some("us-west-2".into()),
            ..base.clone()
        });
        assert!(
            e.contains("--region us-west-2 has no SEV-SNP instances on aws"),
            "{e}"
        );
        let keys_no_blob = out_dir("aws-noblob", true, None);
        let o = DeployOptions {
            bucket: Some("b".into()),
            out_dir: keys_no_blob,
            ..Default::default()
        };
        assert!(err(o).contains("no aws-uefi-data.bin"));
    }
}
