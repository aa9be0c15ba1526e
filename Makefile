# Thin wrappers over cargo and cvm-image. `make demo` is the main job, `make test` runs every test.
SPEC    ?= image.toml
OUT     ?= out
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

image: deps tool
	$(CVM) build --spec $(SPEC) --out $(OUT)

demo: image
	@scripts/demo.sh $(OUT)

test: deps fixtures
	$(CARGO) test --locked --workspace --release

bench: deps tool
	$(CARGO) run --release --locked -p cvm-image --bin cvm-bench

clean:
	rm -rf $(OUT) target
