//! Azure: upload `azure-disk.vhd` as a page blob, publish it as a Compute Gallery image version for
//! confidential VMs (with the owner's PK/KEK/db as `additionalSignatures` when present), open a
//! network security group, reserve a static public IP, create the ConfidentialVM on it, then wait
//! for the agent and verify the VM. Seed: automata-linux `scripts/make_azure_vm.sh`. SEV-SNP or
//! TDX is decided by the VM size family ([`sizes::AZURE`]).

use anyhow::Result;
use base64::Engine as _;
use serde_json::json;

use super::command::PlannedCommand;
use super::keys::{read_key_file, SecureBootKeys};
use super::options::{Cloud, DeployOptions, Tee};
use super::{sizes, verdict};

const DEFAULT_VM_NAME: &str = "cvm_test";
/// The seed's "East US 2", in the canonical form every az command and the REST body accept.
const DEFAULT_LOCATION: &str = "eastus2";
/// DCesv5 is Azure's TDX family, DCasv5 its SEV-SNP family.
const DEFAULT_TDX_SIZE: &str = "Standard_DC2es_v5";
const DEFAULT_SNP_SIZE: &str = "Standard_DC2as_v5";
const CONTAINER: &str = "cvm-image-storage";
const IMAGE_VERSION: &str = "1.0.0";
/// Gallery image version API with `securityProfile.uefiSettings` (custom UEFI keys).
const GALLERY_API_VERSION: &str = "2024-03-03";
const AGENT_RULE_PRIORITY: u32 = 100;
const WORKLOAD_RULE_PRIORITY: u32 = 200;

struct Names {
    vm: String,
    group: String,
    account: String,
    gallery: String,
    definition: String,
    location: String,
    blob: String,
    nsg: String,
    public_ip: String,
}

impl Names {
    fn new(opts: &DeployOptions) -> Self {
        let vm = DeployOptions::or_default(&opts.vm_name, DEFAULT_VM_NAME).to_string();
        let group = opts
            .resource_group
            .clone()
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| format!("{vm}_rg"));
        let account = opts
            .storage_account
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| storage_account_name(&vm));
        let gallery = opts
            .gallery
            .clone()
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| gallery_name(&vm));
        let location = DeployOptions::or_default(&opts.region, DEFAULT_LOCATION).to_string();
        Self {
            definition: format!("{vm}-def"),
            blob: format!("{vm}.vhd"),
            nsg: format!("{vm}-nsg"),
            public_ip: format!("{vm}-ip"),
            vm,
            group,
            account,
            gallery,
            location,
        }
    }

    fn image_version_id(&self) -> String {
        format!(
            "/subscriptions/${{SUBSCRIPTION}}/resourceGroups/{}/providers/Microsoft.Compute/galleries/{}/images/{}/versions/{IMAGE_VERSION}",
            self.group, self.gallery, self.definition
        )
    }
}

/// Storage account names: 3–24 lowercase letters and digits (the seed's derivation, no random suffix).
fn storage_account_name(vm: &str) -> String {
    let mut name: String = vm
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(24)
        .collect();
    while name.len() < 3 {
        name.push('0');
    }
    name
}

/// Gallery names: letters, digits, '_' and '.', not starting or ending with '_' or '.'.
fn gallery_name(vm: &str) -> String {
    let name: String = vm
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let name = name.trim_matches(|c| c == '_' || c == '.');
    if name.is_empty() {
        "cvmgallery".into()
    } else {
        name.chars().take(80).collect()
    }
}

pub(super) fn plan(opts: &DeployOptions, keys: &SecureBootKeys) -> Result<Vec<PlannedCommand>> {
    let n = Names::new(opts);
    let tee = opts.tee.unwrap_or(Tee::Tdx);
    let default_size = match tee {
        Tee::Tdx => DEFAULT_TDX_SIZE,
        Tee::Snp => DEFAULT_SNP_SIZE,
    };
    let size = DeployOptions::or_default(&opts.machine_type, default_size);
    sizes::AZURE.check_machine(size, tee)?;
    let artifact = opts.built_file("azure-disk.vhd", "azure")?;
    let mut cmds = vec![n.resource_group()];
    cmds.extend(n.upload(&artifact.to_string_lossy()));
    cmds.extend(n.gallery_image());
    cmds.push(n.subscription());
    cmds.push(image_version(&n, keys)?);
    cmds.push(n.wait_for_image_version());
    cmds.extend(n.network_security_group(&opts.ports()));
    cmds.push(n.static_ip());
    cmds.push(n.create_vm(tee, size, opts.data_disk_gb));
    cmds.extend(verdict::steps(Cloud::Azure, opts, "IP")?);
    Ok(cmds)
}

impl Names {
    /// An `az` command in the resource group.
    fn az(&self, description: String, command: &[&str]) -> PlannedCommand {
        PlannedCommand::new("az", description)
            .args(command.iter().copied())
            .opt("--resource-group", &self.group)
    }

    fn resource_group(&self) -> PlannedCommand {
        PlannedCommand::new("az", format!("Create resource group {}", self.group))
            .args(["group", "create"])
            .opt("--name", &self.group)
            .opt("--location", &self.location)
    }

    /// Storage account, container, and the VHD as a page blob.
    fn upload(&self, artifact: &str) -> [PlannedCommand; 3] {
        [
            PlannedCommand::new("az", format!("Create storage account {}", self.account))
                .args(["storage", "account", "create"])
                .opt("--name", &self.account)
                .opt("--resource-group", &self.group)
                .opt("--location", &self.location)
                .opt("--sku", "Standard_LRS"),
            PlannedCommand::new("az", format!("Create blob container {CONTAINER}"))
                .args(["storage", "container", "create"])
                .opt("--name", CONTAINER)
                .opt("--account-name", &self.account),
            PlannedCommand::new(
                "az",
                format!("Upload {artifact} as page blob {}", self.blob),
            )
            .args(["storage", "blob", "upload"])
            .opt("--account-name", &self.account)
            .opt("--container-name", CONTAINER)
            .opt("--name", &self.blob)
            .opt("--file", artifact)
            .opt("--type", "page")
            .arg("--overwrite"),
        ]
    }

    /// The gallery and the confidential-VM capable image definition.
    fn gallery_image(&self) -> [PlannedCommand; 2] {
        [
            PlannedCommand::new("az", format!("Create compute gallery {}", self.gallery))
                .args(["sig", "create"])
                .opt("--gallery-name", &self.gallery)
                .opt("--resource-group", &self.group)
                .opt("--location", &self.location),
            self.az(
                format!(
                    "Create image definition {} (Gen2, confidential-VM capable)",
                    self.definition
                ),
                &["sig", "image-definition", "create"],
            )
            .opt("--gallery-name", &self.gallery)
            .opt("--gallery-image-definition", &self.definition)
            .opt("--location", &self.location)
            .opt("--publisher", "cvm-image")
            .opt("--offer", "cvm-image")
            .opt("--sku", format!("{}-sku", self.vm))
            .opt("--os-type", "Linux")
            .opt("--os-state", "specialized")
            .opt("--hyper-v-generation", "V2")
            .opt(
                "--features",
                "SecurityType=TrustedLaunchAndConfidentialVmSupported",
            ),
        ]
    }

    fn subscription(&self) -> PlannedCommand {
        PlannedCommand::new("az", "Read the subscription id")
            .args(["account", "show"])
            .opt("--query", "id")
            .opt("--output", "tsv")
            .capture("SUBSCRIPTION")
    }

    fn wait_for_image_version(&self) -> PlannedCommand {
        self.az(
            format!("Wait for image version {IMAGE_VERSION} to replicate (often 8+ minutes)"),
            &["sig", "image-version", "wait"],
        )
        .opt("--gallery-name", &self.gallery)
        .opt("--gallery-image-definition", &self.definition)
        .opt("--gallery-image-version", IMAGE_VERSION)
        .arg("--created")
    }

    /// The NSG and one inbound rule per port (the agent's first).
    fn network_security_group(&self, ports: &[u16]) -> Vec<PlannedCommand> {
        let mut cmds =
            vec![
                PlannedCommand::new("az", format!("Create network security group {}", self.nsg))
                    .args(["network", "nsg", "create"])
                    .opt("--name", &self.nsg)
                    .opt("--resource-group", &self.group)
                    .opt("--location", &self.location),
            ];
        for (i, port) in ports.iter().enumerate() {
            let (rule, priority) = match i {
                0 => ("attestation-agent".to_string(), AGENT_RULE_PRIORITY),
                _ => (
                    format!("workload-{port}"),
                    WORKLOAD_RULE_PRIORITY + i as u32 - 1,
                ),
            };
            cmds.push(
                PlannedCommand::new("az", format!("Allow inbound TCP {port}"))
                    .args(["network", "nsg", "rule", "create"])
                    .opt("--nsg-name", &self.nsg)
                    .opt("--resource-group", &self.group)
                    .opt("--name", rule)
                    .opt("--priority", priority.to_string())
                    .opt("--direction", "Inbound")
                    .opt("--access", "Allow")
                    .opt("--protocol", "Tcp")
                    .opt("--destination-port-ranges", port.to_string()),
            );
        }
        cmds
    }

    /// A static Standard-SKU public IP; its address is captured for the verification.
    fn static_ip(&self) -> PlannedCommand {
        self.az(
            format!("Reserve the static public IP {}", self.public_ip),
            &["network", "public-ip", "create"],
        )
        .opt("--name", &self.public_ip)
        .opt("--location", &self.location)
        .opt("--sku", "Standard")
        .opt("--allocation-method", "Static")
        .opt("--query", "publicIp.ipAddress")
        .opt("--output", "tsv")
        .capture("IP")
    }

    fn create_vm(&self, tee: Tee, size: &str, data_disk_gb: Option<u32>) -> PlannedCommand {
        let mut create = self
            .az(
                format!(
                    "Create the {tee} confidential VM {} ({size}) with vTPM and Secure Boot",
                    self.vm
                ),
                &["vm", "create"],
            )
            .opt("--name", &self.vm)
            .opt("--location", &self.location)
            .opt("--size", size)
            .opt("--image", self.image_version_id())
            .arg("--specialized")
            .opt("--security-type", "ConfidentialVM")
            .opt("--os-disk-security-encryption-type", "VMGuestStateOnly")
            .opt("--enable-vtpm", "true")
            .opt("--enable-secure-boot", "true")
            .opt("--public-ip-address", &self.public_ip)
            .opt("--nsg", &self.nsg)
            // az checks for an SSH key even for a specialized image, whose VM it never sends one
            // to (no osProfile): without this a machine lacking ~/.ssh/id_rsa.pub fails here.
            // The key az may generate there is never used by this image.
            .arg("--generate-ssh-keys");
        if let Some(gb) = data_disk_gb {
            create = create.opt("--data-disk-sizes-gb", gb.to_string());
        }
        create
    }
}

/// The gallery image version, created through the REST API because `az sig image-version create`
/// cannot set custom UEFI keys. With owner keys: no Microsoft template, our PK/KEK/db only.
fn image_version(n: &Names, keys: &SecureBootKeys) -> Result<PlannedCommand> {
    let mut properties = json!({
        "publishingProfile": { "targetRegions": [{ "name": n.location, "regionalReplicaCount": 1 }] },
        "storageProfile": { "osDiskImage": {
            "hostCaching": "ReadOnly",
            "source": {
                "storageAccountId": format!("/subscriptions/${{SUBSCRIPTION}}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}", n.group, n.account),
                "uri": format!("https://{}.blob.core.windows.net/{CONTAINER}/{}", n.account, n.blob),
            }
        }}
    });
    let what = match keys {
        SecureBootKeys::Owner { pk, kek, db, .. } => {
            let cert = |p| -> Result<serde_json::Value> {
                let der = read_key_file(p)?;
                Ok(json!({ "type": "x509", "value": [base64::engine::general_purpose::STANDARD.encode(der)] }))
            };
            properties["securityProfile"] = json!({ "uefiSettings": {
                "signatureTemplateNames": ["NoSignatureTemplate"],
                "additionalSignatures": { "pk": cert(pk)?, "kek": [cert(kek)?], "db": [cert(db)?] }
            }});
            "with the owner's Secure Boot PK/KEK/db"
        }
        SecureBootKeys::PlatformDefault => "with Azure's default (Microsoft) Secure Boot keys (no out/secure-boot/{PK,KEK,db}.der found)",
    };
    let body = json!({ "location": n.location, "properties": properties });
    Ok(PlannedCommand::new("az", format!("Create gallery image version {IMAGE_VERSION} from the blob {what}"))
        .args(["rest", "--method", "PUT"])
        .opt(
            "--url",
            format!(
                "https://management.azure.com/subscriptions/${{SUBSCRIPTION}}/resourceGroups/{}/providers/Microsoft.Compute/galleries/{}/images/{}/versions/{IMAGE_VERSION}?api-version={GALLERY_API_VERSION}",
                n.group, n.gallery, n.definition
            ),
        )
        .opt("--body", body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{lines, out_dir, verdict_lines};
    use super::super::{plan as plan_for, Cloud};
    use super::*;

    #[test]
    fn names_follow_the_seed_derivation() {
        assert_eq!(storage_account_name("tdx-demo"), "tdxdemo");
        assert_eq!(storage_account_name("a!@"), "a00");
        assert_eq!(
            storage_account_name("A-very-long-virtual-machine-name-1"),
            "averylongvirtualmachinen"
        );
        assert_eq!(gallery_name("MyCvm01"), "mycvm01");
        assert_eq!(gallery_name("_cvm_test."), "cvm_test");
        assert_eq!(gallery_name("!!"), "cvmgallery");
        assert_eq!(sizes::AZURE.tee_of("Standard_DC2es_v5"), Some(Tee::Tdx));
        assert_eq!(sizes::AZURE.tee_of("Standard_DC16ads_v5"), Some(Tee::Snp));
        assert_eq!(sizes::AZURE.tee_of("Standard_D2s_v5"), None);
    }

    #[test]
    fn defaults_without_keys() -> Result<()> {
        let out = out_dir("az-default", false, None);
        let opts = DeployOptions {
            out_dir: out.clone(),
            ..Default::default()
        };
        let cmds = plan_for(Cloud::Azure, &opts)?;
        let o = out.display();
        let verdict = verdict_lines(&out, "azure", "IP");
        let body = r#"{"location":"eastus2","properties":{"publishingProfile":{"targetRegions":[{"name":"eastus2","regionalReplicaCount":1}]},"storageProfile":{"osDiskImage":{"hostCaching":"ReadOnly","source":{"storageAccountId":"/subscriptions/${SUBSCRIPTION}/resourceGroups/cvm_test_rg/providers/Microsoft.Storage/storageAccounts/cvmtest","uri":"https://cvmtest.blob.core.windows.net/cvm-image-storage/cvm_test.vhd"}}}}}"#;
        assert_eq!(
            lines(&cmds),
            [
                "az group create --name cvm_test_rg --location eastus2".to_string(),
                "az storage account create --name cvmtest --resource-group cvm_test_rg --location eastus2 --sku Standard_LRS".to_string(),
                "az storage container create --name cvm-image-storage --account-name cvmtest".to_string(),
                format!("az storage blob upload --account-name cvmtest --container-name cvm-image-storage --name cvm_test.vhd --file {o}/azure-disk.vhd --type page --overwrite"),
                "az sig create --gallery-name cvm_test --resource-group cvm_test_rg --location eastus2".to_string(),
                "az sig image-definition create --resource-group cvm_test_rg --gallery-name cvm_test \
                 --gallery-image-definition cvm_test-def --location eastus2 --publisher cvm-image --offer cvm-image \
                 --sku cvm_test-sku --os-type Linux --os-state specialized --hyper-v-generation V2 \
                 --features SecurityType=TrustedLaunchAndConfidentialVmSupported".to_string(),
                "SUBSCRIPTION=$(az account show --query id --output tsv)".to_string(),
                format!(
                    "az rest --method PUT --url \"https://management.azure.com/subscriptions/${{SUBSCRIPTION}}/resourceGroups/cvm_test_rg/providers/Microsoft.Compute/galleries/cvm_test/images/cvm_test-def/versions/1.0.0?api-version=2024-03-03\" --body {}",
                    crate::deploy::shell_quote(body)
                ),
                "az sig image-version wait --resource-group cvm_test_rg --gallery-name cvm_test \
                 --gallery-image-definition cvm_test-def --gallery-image-version 1.0.0 --created".to_string(),
                "az network nsg create --name cvm_test-nsg --resource-group cvm_test_rg --location eastus2".to_string(),
                "az network nsg rule create --nsg-name cvm_test-nsg --resource-group cvm_test_rg --name attestation-agent \
                 --priority 100 --direction Inbound --access Allow --protocol Tcp --destination-port-ranges 8000".to_string(),
                "IP=$(az network public-ip create --resource-group cvm_test_rg --name cvm_test-ip --location eastus2 \
                 --sku Standard --allocation-method Static --query publicIp.ipAddress --output tsv)".to_string(),
                "az vm create --resource-group cvm_test_rg --name cvm_test --location eastus2 --size Standard_DC2es_v5 \
                 --image \"/subscriptions/${SUBSCRIPTION}/resourceGroups/cvm_test_rg/providers/Microsoft.Compute/galleries/cvm_test/images/cvm_test-def/versions/1.0.0\" \
                 --specialized --security-type ConfidentialVM --os-disk-security-encryption-type VMGuestStateOnly \
                 --enable-vtpm true --enable-secure-boot true --public-ip-address cvm_test-ip --nsg cvm_test-nsg \
                 --generate-ssh-keys".to_string(),
                verdict[0].clone(),
                verdict[1].clone(),
            ]
        );
        assert!(cmds[7]
            .description
            .contains("default (Microsoft) Secure Boot keys"));
        Ok(())
    }

    #[test]
    fn snp_with_owner_keys_explicit_names_ports_and_data_disk() -> Result<()> {
        let out = out_dir("az-full", true, None);
        let opts = DeployOptions {
            tee: Some(Tee::Snp),
            vm_name: Some("node1".into()),
            region: Some("westeurope".into()),
            resource_group: Some("rg1".into()),
            storage_account: Some("acct1".into()),
            gallery: Some("gal1".into()),
            additional_ports: vec![443, 80],
            data_disk_gb: Some(64),
            out_dir: out.clone(),
            ..Default::default()
        };
        let cmds = plan_for(Cloud::Azure, &opts)?;
        let l = lines(&cmds);
        assert_eq!(l.len(), 17);
        // The REST body carries the certificates as base64 X.509 without Microsoft's template.
        let body_arg = cmds[7].args.last().unwrap();
        let body: serde_json::Value = serde_json::from_str(body_arg)?;
        let uefi = &body["properties"]["securityProfile"]["uefiSettings"];
        assert_eq!(
            uefi["signatureTemplateNames"],
            json!(["NoSignatureTemplate"])
        );
        assert_eq!(
            uefi["additionalSignatures"]["pk"],
            json!({"type": "x509", "value": ["cGs="]})
        );
        assert_eq!(
            uefi["additionalSignatures"]["kek"],
            json!([{"type": "x509", "value": ["a2s="]}])
        );
        assert_eq!(
            uefi["additionalSignatures"]["db"],
            json!([{"type": "x509", "value": ["ZGI="]}])
        );
        assert_eq!(
            body["properties"]["storageProfile"]["osDiskImage"]["source"]["uri"],
            "https://acct1.blob.core.windows.net/cvm-image-storage/node1.vhd"
        );
        assert_eq!(l[11], "az network nsg rule create --nsg-name node1-nsg --resource-group rg1 --name workload-443 --priority 200 --direction Inbound --access Allow --protocol Tcp --destination-port-ranges 443");
        assert_eq!(l[12], "az network nsg rule create --nsg-name node1-nsg --resource-group rg1 --name workload-80 --priority 201 --direction Inbound --access Allow --protocol Tcp --destination-port-ranges 80");
        assert_eq!(
            l[13],
            "IP=$(az network public-ip create --resource-group rg1 --name node1-ip --location westeurope \
             --sku Standard --allocation-method Static --query publicIp.ipAddress --output tsv)"
        );
        assert_eq!(
            l[14],
            "az vm create --resource-group rg1 --name node1 --location westeurope --size Standard_DC2as_v5 \
             --image \"/subscriptions/${SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute/galleries/gal1/images/node1-def/versions/1.0.0\" \
             --specialized --security-type ConfidentialVM --os-disk-security-encryption-type VMGuestStateOnly \
             --enable-vtpm true --enable-secure-boot true --public-ip-address node1-ip --nsg node1-nsg \
             --generate-ssh-keys --data-disk-sizes-gb 64"
        );
        assert_eq!(l[15..], verdict_lines(&out, "azure", "IP"));
        Ok(())
    }

    #[test]
    fn a_size_of_the_other_tee_is_refused() {
        let out = out_dir("az-err", false, None);
        let opts = DeployOptions {
            tee: Some(Tee::Snp),
            machine_type: Some("Standard_DC4es_v5".into()),
            out_dir: out,
            ..Default::default()
        };
        let err = format!("{:#}", plan_for(Cloud::Azure, &opts).unwrap_err());
        assert!(err.contains("not a SEV-SNP confidential VM size"), "{err}");
        // The EC (memory-optimised) confidential families are sizes like the DC ones.
        for (tee, size) in [
            (Tee::Snp, "Standard_EC4as_v5"),
            (Tee::Tdx, "Standard_EC8eds_v5"),
        ] {
            let opts = DeployOptions {
                tee: Some(tee),
                machine_type: Some(size.into()),
                ..opts.clone()
            };
            let cmds = plan_for(Cloud::Azure, &opts).unwrap();
            assert!(cmds[12].args.contains(&size.to_string()), "{:?}", cmds[12]);
        }
    }
}
