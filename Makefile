# Thin wrappers over cargo and cvm-image. `make demo` is the main job, `make test` runs every test.
SPEC    ?= image.toml
OUT     ?= out
# Demo Secure Boot keys (git-ignored), created on first use: the image's UKI is signed with db and the
# keys are enrolled in out/OVMF_VARS.fd, so `make demo` boots with Secure Boot enforced.
KEYS    ?= keys
CVM     := target/release/cvm-image
CARGO   ?= cargo

.PHONY: deps tool fixtures image demo test bench lock clean

deps:
	@scripts/deps.sh

tool:
	$(CARGO) build --release --locked -p cvm-image

lock: tool
	$(CVM) lock --spec $(SPEC) --kernel kernel/debian-6.12.toml --kernel kernel/debian-6.1.toml

# The pinned inputs, downloaded, verified and linked where the unit tests look for them.
fixtures: tool
	$(CVM) fetch --spec $(SPEC) --kernel kernel/debian-6.1.toml --link-dir target/fixtures

$(KEYS)/db.crt:
	$(MAKE) tool
	$(CVM) keys generate --dir $(KEYS)

image: deps tool $(KEYS)/db.crt
	$(CVM) build --spec $(SPEC) --out $(OUT) --keys $(KEYS) --golden-key $(KEYS)/golden.key

demo: image
	@KEYS=$(KEYS) scripts/demo.sh $(OUT)

test: deps fixtures
	$(CARGO) test --locked --workspace --release --no-fail-fast

bench: deps tool
	$(CARGO) run --release --locked -p cvm-image --bin cvm-bench

clean:
	rm -rf $(OUT) target
