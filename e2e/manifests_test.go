package e2e

import (
	"bufio"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-run/outpost/internal/testenv"
)

// No container engine or Kubernetes cluster runs here, so deploy/container
// and deploy/kubernetes are checked by reading them: what they say must
// agree with the binaries built from this tree, with each other and with
// the rules the README promises (non-root, static, read-only root).

// TestContainerfile checks the multi-stage build: a static build stage on
// the Go version go.mod names, and for each binary a target that runs as
// user 65532 (on distroless/static but for the agent) with an entrypoint in
// /usr/local/bin, whose flags the binary knows.
func TestContainerfile(t *testing.T) {
	t.Parallel()
	f, err := os.Open(deployPath(t, "container", "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type stage struct {
		from, user string
		lines      []string
	}
	stages := map[string]*stage{}
	var cur *stage
	args := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		for strings.HasSuffix(line, `\`) && sc.Scan() {
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(sc.Text())
		}
		word, rest, _ := strings.Cut(line, " ")
		switch word {
		case "FROM":
			from, name, ok := strings.Cut(rest, " AS ")
			if !ok {
				t.Fatalf("Containerfile: unnamed stage %q", line)
			}
			cur = &stage{from: from}
			stages[name] = cur
		case "ARG":
			if k, v, ok := strings.Cut(rest, "="); ok && cur == nil {
				args[k] = v
			}
		case "USER":
			cur.user = rest
		}
		if cur != nil && word != "" && !strings.HasPrefix(word, "#") {
			cur.lines = append(cur.lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	build := stages["build"]
	if build == nil {
		t.Fatalf("Containerfile: no build stage; stages %v", slices.Sorted(maps.Keys(stages)))
	}
	if want := goMinor(t); args["GO_VERSION"] != want {
		t.Errorf("Containerfile: ARG GO_VERSION=%s, go.mod wants Go %s", args["GO_VERSION"], want)
	}
	if !slices.ContainsFunc(build.lines, func(l string) bool {
		return strings.Contains(l, "CGO_ENABLED=0") && strings.Contains(l, "go build") &&
			strings.Contains(l, "./cmd/coordinator ./cmd/agent ./cmd/outpost")
	}) {
		t.Errorf("Containerfile: no static (CGO_ENABLED=0) go build of the three commands:\n%s", strings.Join(build.lines, "\n"))
	}
	for _, name := range []string{"coordinator", "agent", "outpost"} {
		s := stages[name]
		if s == nil {
			t.Errorf("Containerfile: no target %q", name)
			continue
		}
		// The agent's jobs want a shell; the others need nothing but the binary.
		if name != "agent" && !strings.HasPrefix(s.from, "gcr.io/distroless/static") {
			t.Errorf("Containerfile: target %s is built on %s, want distroless/static", name, s.from)
		}
		if s.user != "65532:65532" {
			t.Errorf("Containerfile: target %s runs as %q, want 65532:65532", name, s.user)
		}
		if !slices.Contains(s.lines, "COPY --from=build /out/"+name+" /usr/local/bin/"+name) {
			t.Errorf("Containerfile: target %s does not copy /out/%s from the build stage", name, name)
		}
		var argv []string
		for _, l := range s.lines {
			word, rest, _ := strings.Cut(l, " ")
			if word == "ENTRYPOINT" || word == "CMD" {
				var a []string
				if err := yaml.Unmarshal([]byte(rest), &a); err != nil {
					t.Fatalf("Containerfile: %s: %v", l, err)
				}
				argv = append(argv, a...)
			}
		}
		if len(argv) == 0 || argv[0] != "/usr/local/bin/"+name {
			t.Errorf("Containerfile: target %s starts %q, want /usr/local/bin/%s", name, argv, name)
			continue
		}
		checkFlags(t, "Containerfile target "+name, bin(name), argv[1:])
	}
}

// goMinor is the Go release go.mod asks for, such as 1.26.
func goMinor(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(testenv.GoTool(), "list", "-m", "-f", "{{.GoVersion}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	v := strings.Split(strings.TrimSpace(string(out)), ".")
	return strings.Join(v[:min(2, len(v))], ".")
}

// TestKubernetesManifests parses deploy/kubernetes and checks that the
// kustomization lists every manifest; that each object is named, in the
// outpost namespace; that each workload's selector matches its pods, which
// run as non-root with a read-only root and no privilege escalation, and
// whose flags the binaries know; and that the Service and the monitors
// select those pods and name a port they have. With kubectl on PATH,
// 'kubectl kustomize' must build the whole.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	dir := deployPath(t, "kubernetes")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	var objs []k8sObject
	var manifests []string
	for _, path := range files {
		name := filepath.Base(path)
		docs := decodeYAML(t, path)
		if name == "kustomization.yaml" {
			if len(docs) != 1 {
				t.Fatalf("%s: %d documents", name, len(docs))
			}
			if err := docs[0].Decode(&kust); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		manifests = append(manifests, name)
		for _, d := range docs {
			var o k8sObject
			if err := d.Decode(&o); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			o.file = name
			objs = append(objs, o)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(kust.Resources)), manifests) {
		t.Errorf("kustomization.yaml lists %v; the manifests are %v", kust.Resources, manifests)
	}

	// What a selector can pick: pods by their labels and container port
	// names, Services by their own labels and port names.
	type target struct {
		name   string
		labels map[string]string
		ports  []string
	}
	var workloads, services []target
	for _, o := range objs {
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: an object without apiVersion, kind or metadata.name: %+v", o.file, o)
		}
		if o.Kind != "Namespace" && o.Metadata.Namespace != "outpost" {
			t.Errorf("%s: %s %s is in namespace %q, want outpost", o.file, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
		switch o.Kind {
		case "Deployment", "StatefulSet":
			checkWorkload(t, o)
			w := target{name: o.Metadata.Name, labels: o.Spec.Template.Metadata.Labels}
			for _, c := range o.Spec.Template.Spec.Containers {
				for _, p := range c.Ports {
					w.ports = append(w.ports, p.Name)
				}
			}
			workloads = append(workloads, w)
		case "Service":
			sv := target{name: o.Metadata.Name, labels: o.Metadata.Labels}
			for _, p := range o.Spec.Ports {
				sv.ports = append(sv.ports, p.Name)
			}
			services = append(services, sv)
		}
	}
	for _, o := range objs {
		var among []target
		var ports []string
		switch o.Kind {
		case "Service":
			among = workloads
			for _, p := range o.Spec.Ports {
				ports = append(ports, p.TargetPort)
			}
		case "PodMonitor":
			among = workloads
			for _, e := range o.Spec.PodMetricsEndpoints {
				ports = append(ports, e.Port)
			}
		case "ServiceMonitor":
			among = services
			for _, e := range o.Spec.Endpoints {
				ports = append(ports, e.Port)
			}
		default:
			continue
		}
		var matched []target
		for _, w := range among {
			if labelsMatch(o.selector(), w.labels) {
				matched = append(matched, w)
			}
		}
		if len(matched) != 1 {
			t.Errorf("%s: %s %s selects %d objects, want 1", o.file, o.Kind, o.Metadata.Name, len(matched))
			continue
		}
		for _, p := range ports {
			if !slices.Contains(matched[0].ports, p) {
				t.Errorf("%s: %s %s names port %q, which %s does not have", o.file, o.Kind, o.Metadata.Name, p, matched[0].name)
			}
		}
	}

	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		if r := runCmd(t, dir, baseEnv(), kubectl, "kustomize", "."); r.code != 0 {
			t.Errorf("kubectl kustomize:\n%s", r)
		}
	} else {
		t.Log("kubectl is not on PATH: 'kubectl kustomize' not tried")
	}
}

// k8sObject is the part of a Kubernetes object the test reads.
type k8sObject struct {
	file       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		// A label selector ({matchLabels: ...}), or a Service's plain map.
		Selector map[string]any `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
					RunAsUser    int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				InitContainers []k8sContainer `yaml:"initContainers"`
				Containers     []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Name       string `yaml:"name"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		Endpoints           []struct{ Port string } `yaml:"endpoints"`
		PodMetricsEndpoints []struct{ Port string } `yaml:"podMetricsEndpoints"`
	} `yaml:"spec"`
}

// selector is the labels the object selects by.
func (o k8sObject) selector() map[string]string {
	m := o.Spec.Selector
	if ml, ok := m["matchLabels"].(map[string]any); ok {
		m = ml
	}
	out := map[string]string{}
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

type k8sContainer struct {
	Name            string    `yaml:"name"`
	Image           string    `yaml:"image"`
	Args            []string  `yaml:"args"`
	Ports           []k8sPort `yaml:"ports"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

type k8sPort struct {
	Name string `yaml:"name"`
}

// checkWorkload checks a Deployment's or StatefulSet's pods.
func checkWorkload(t *testing.T, o k8sObject) {
	t.Helper()
	where := o.file + ": " + o.Kind + " " + o.Metadata.Name
	pod := o.Spec.Template.Spec
	if sel := o.selector(); !labelsMatch(sel, o.Spec.Template.Metadata.Labels) {
		t.Errorf("%s: selector %v does not match its pods' labels %v", where, sel, o.Spec.Template.Metadata.Labels)
	}
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("%s: pods may run as root: %+v", where, pod.SecurityContext)
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		sc := c.SecurityContext
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
			t.Errorf("%s: container %s: want allowPrivilegeEscalation false, a read-only root and every capability dropped; got %+v", where, c.Name, sc)
		}
	}
	for _, c := range pod.Containers {
		binary := strings.TrimPrefix(strings.Split(c.Image, ":")[0], "outpost-")
		if binary != c.Name {
			t.Errorf("%s: container %s runs image %s, want outpost-%s", where, c.Name, c.Image, c.Name)
			continue
		}
		checkFlags(t, where, bin(c.Name), c.Args)
	}
}

func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// decodeYAML reads every document of a YAML file.
func decodeYAML(t testing.TB, path string) []*yaml.Node {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var docs []*yaml.Node
	dec := yaml.NewDecoder(f)
	for {
		var d yaml.Node
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		docs = append(docs, &d)
	}
}

var flagRE = regexp.MustCompile(`^--[a-z][a-z0-9-]*`)

// checkFlags checks that every --flag in args is one the binary at path
// takes. args that start with a word, such as 'run ...' for the
// coordinator, name its subcommand. Values such as $VAR are not looked at.
func checkFlags(t testing.TB, where, path string, args []string) {
	t.Helper()
	help := []string{"--help"}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		help = []string{args[0], "--help"}
	}
	r := runCmd(t, t.TempDir(), baseEnv(), path, help...)
	if r.code != 0 {
		t.Fatalf("%s %s:\n%s", path, strings.Join(help, " "), r)
	}
	known := map[string]bool{}
	for _, w := range strings.Fields(r.stdout + r.stderr) {
		if m := flagRE.FindString(w); m != "" {
			known[m] = true
		}
	}
	name := filepath.Base(path)
	for _, a := range args {
		if f := flagRE.FindString(a); f != "" && !known[f] {
			t.Errorf("%s: %s does not take %s (%s %s)", where, name, f, name, strings.Join(help, " "))
		}
	}
}
