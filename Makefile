# nomad-runner-operator. `make help` lists the targets.
include hack/versions.env

# Tools and test binaries are built from the Go module proxy by hack/*.sh into a
# per-user cache and linked into bin/ (git ignores it).
LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUBECTL ?= $(LOCALBIN)/kubectl
KUSTOMIZE ?= $(LOCALBIN)/kustomize
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
# The manager image that `make docker-build`, `make deploy` and `make build-installer` use.
IMG ?= ghcr.io/nomad-runner-operator/nomad-runner-operator:latest
CONTAINER_TOOL ?= docker
NOMAD ?= $(LOCALBIN)/nomad
ENVTEST_ASSETS ?= $(LOCALBIN)/k8s

export GOTOOLCHAIN = local
export GOFLAGS = -buildvcs=false

# Options for go test, e.g. make test TEST_ARGS='-run TestX -v'.
TEST_ARGS ?=
TEST_TIMEOUT ?= 25m

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC from the kubebuilder markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Generate the DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint with .golangci.yml (CI runs it within `make test`).
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: manifests generate ## Fail if generated files (CRDs, RBAC, deepcopy) differ from what is committed.
	@if [ -n "$$(git status --porcelain -- api config)" ]; then \
		echo "Generated files are stale or uncommitted; run 'make manifests generate' and commit:"; \
		git status --porcelain -- api config; git --no-pager diff --stat -- api config; exit 1; fi

.PHONY: test
test: manifests generate fmt vet test-bins ## Build what is missing, then run unit and integration tests (real kube-apiserver, etcd, Nomad); in CI (CI set) first verify and lint.
	@if [ -n "$$CI" ]; then $(MAKE) --no-print-directory verify lint; fi
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) NOMAD_BIN=$(NOMAD) KUBECTL=$(KUBECTL) \
		hack/run-tests.sh go test ./... -timeout $(TEST_TIMEOUT) $(TEST_ARGS)

SOAK_DURATION ?= 10m

.PHONY: soak
soak: manifests test-bins ## Soak: SOAK_DURATION (10m) of claim/release against an in-process operator, sampling RSS and goroutines; not part of `test`.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) NOMAD_BIN=$(NOMAD) SOAK_DURATION=$(SOAK_DURATION) \
		go test -tags soak ./test/soak -run TestSoak -v -count=1 -timeout 60m

# Knobs of make bench (environment): BENCH_N (cold fill, 200), BENCH_CLAIM_POOL (100),
# BENCH_REPS (3), BENCH_OBJECTS (5000), BENCH_NOMAD_NICED=0 (skip the niced topology),
# BENCH_WAIT_FACTOR (k, 5: every wait may take k times raw Nomad's time for the same
# work, measured in the same run), BENCH_PROFILE_DIR, BENCH_NOTE. BENCH_TIMEOUT bounds
# the whole run; the report is written 5 minutes before it, whatever has failed.
BENCH_TIMEOUT ?= 150m

.PHONY: bench
bench: manifests test-bins ## Benchmarks against the physical limits (real control plane and Nomad); writes docs/BENCHMARKS.md and docs/benchmarks.json, then fails if a repetition failed.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) NOMAD_BIN=$(NOMAD) KUBECTL=$(KUBECTL) NRO_BENCH=1 \
		go test ./test/bench/ -run TestBench -count=1 -v -timeout $(BENCH_TIMEOUT) $(BENCH_ARGS)

.PHONY: bench-admission
bench-admission: manifests test-bins ## What the admission policies add to a claim (real API server, no Nomad): admin vs claimer-role user vs no policies.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) NRO_BENCH=1 go test ./test/bench/ -run TestAdmissionCost -count=1 -v -timeout 10m

.PHONY: bench-report
bench-report: ## Write docs/BENCHMARKS.md again from docs/benchmarks.json and test/bench/findings.md (no measuring).
	NRO_BENCH_RENDER=1 go test ./test/bench/ -run TestRenderReport -count=1

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the manager binary.
	go build -o $(LOCALBIN)/manager main.go

.PHONY: plugin
plugin: ## Build the kubectl plugin (kubectl nomadrunner ...) into bin/.
	go build -o $(LOCALBIN)/kubectl-nomadrunner ./cmd/kubectl-nomadrunner

.PHONY: run-local
run-local: build test-bins ## Quickstart: local control plane + Nomad dev agent + the operator (bin/manager) + the sample; Ctrl-C stops all.
	go build -o $(LOCALBIN)/run-local ./hack/run-local
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) NOMAD_BIN=$(NOMAD) $(LOCALBIN)/run-local --manager $(LOCALBIN)/manager

.PHONY: run
run: manifests generate fmt vet ## Run the operator against the cluster of KUBECONFIG and the Nomad of NOMAD_ADDR.
	go run ./main.go

.PHONY: docker-build
docker-build: ## Build the manager image IMG with $(CONTAINER_TOOL) (needs a container engine).
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the manager image IMG.
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: build-installer
build-installer: manifests kustomize ## Render everything `make deploy` installs into dist/install.yaml (image IMG).
	mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default > dist/install.yaml
	echo --- >> dist/install.yaml
	$(KUSTOMIZE) build config/policy >> dist/install.yaml
	git checkout -- config/manager/kustomization.yaml 2>/dev/null || true

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRDs and the admission policies (config/policy) into the cluster of KUBECONFIG.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -
	$(KUSTOMIZE) build config/policy | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRDs (and with them every environment and runner) and the admission policies from the cluster.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -
	$(KUSTOMIZE) build config/policy | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator (CRDs, RBAC, admission policies, 2-replica manager, metrics Service) with image IMG to the cluster of KUBECONFIG.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | $(KUBECTL) apply --server-side -f -
	$(KUSTOMIZE) build config/policy | $(KUBECTL) apply --server-side -f -
	git checkout -- config/manager/kustomization.yaml 2>/dev/null || true

.PHONY: undeploy
undeploy: kustomize ## Remove what `make deploy` installed. Environments are deleted first, so their Nomad jobs are purged while the operator still runs.
	-$(KUBECTL) delete executionenvironments.execution.nomadrunner.io --all --all-namespaces --wait --timeout=5m
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -
	$(KUSTOMIZE) build config/policy | $(KUBECTL) delete --ignore-not-found -f -

##@ Tools and test binaries

.PHONY: test-bins
test-bins: kube etcd nomad ## Build kube-apiserver, kubectl, etcd and the Nomad agent (cached).

# One at a time: the kube-apiserver link alone peaks at ~2.4 GB and both cores.
.PHONY: kube
kube: ## Build kube-apiserver and kubectl into bin/.
	hack/build-kube.sh

.PHONY: etcd
etcd: kube ## Build etcd into bin/k8s.
	hack/build-etcd.sh

.PHONY: nomad
nomad: etcd ## Build the Nomad agent (tests only) into bin/.
	hack/build-nomad.sh

.PHONY: controller-gen
controller-gen: ## Install controller-gen into bin/.
	@hack/install-go-tool.sh controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen $(CONTROLLER_GEN_VERSION)

.PHONY: golangci-lint
golangci-lint: ## Install golangci-lint into bin/.
	@hack/install-go-tool.sh golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint $(GOLANGCI_LINT_VERSION)

.PHONY: kustomize
kustomize: ## Install kustomize into bin/.
	@hack/install-go-tool.sh kustomize sigs.k8s.io/kustomize/kustomize/v5 $(KUSTOMIZE_VERSION)
