package deploy_test

// Checks deploy/kubernetes without a cluster: every manifest decodes strictly
// into its Kubernetes API type (the same strict decoder the API server uses
// for field validation), and every node's environment, as the kubelet would
// build it, goes through the server's own configuration loader.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/discovery-go/discovery/configs"
)

const (
	k8sDir            = "../../deploy/kubernetes"
	kustomizationFile = "kustomization.yaml"

	// Names the manifests, the README and the users' kubectl commands share.
	k8sName       = "discovery" // StatefulSet, client Service, PDB
	peerService   = "discovery-peer"
	secretName    = "discovery-cluster"
	secretKey     = "secret"
	adminTokenKey = "admin-token"                 // optional key of the same Secret
	testAdminTok  = "admin-token-of-the-k8s-test" // what the pod would read from it
	containerName = "discovery"

	// Values the test plays the kubelet with.
	testNamespace = "registry"
	nonRootID     = 65532
)

// k8sScheme knows exactly the API types the manifests may use; any other
// apiVersion/kind fails to decode.
func k8sScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// decodeStrict splits a YAML stream into documents and decodes each into the
// typed object its apiVersion/kind names. Strict: unknown or wrongly cased
// fields and duplicate keys are errors, as with `kubectl apply
// --validate=strict`. Documents holding only comments are skipped.
func decodeStrict(t *testing.T, data []byte) ([]runtime.Object, error) {
	t.Helper()
	dec := serializer.NewCodecFactory(k8sScheme(t), serializer.EnableStrict).UniversalDeserializer()
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if j, err := sigsyaml.YAMLToJSON(doc); err == nil && string(bytes.TrimSpace(j)) == "null" {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		objs = append(objs, obj)
	}
}

// k8sManifests is what deploy/kubernetes ships, decoded.
type k8sManifests struct {
	sts      *appsv1.StatefulSet
	services map[string]*corev1.Service
	pdb      *policyv1.PodDisruptionBudget
	files    []string // manifest files, without kustomization.yaml
}

func manifestFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") || e.Name() == kustomizationFile {
			continue
		}
		files = append(files, e.Name())
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", k8sDir)
	}
	return files
}

func loadK8s(t *testing.T) k8sManifests {
	t.Helper()
	m := k8sManifests{services: map[string]*corev1.Service{}, files: manifestFiles(t)}
	var objs []runtime.Object
	for _, f := range m.files {
		data, err := os.ReadFile(filepath.Join(k8sDir, f))
		if err != nil {
			t.Fatal(err)
		}
		o, err := decodeStrict(t, data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(o) == 0 {
			t.Errorf("%s: no object", f)
		}
		objs = append(objs, o...)
	}
	for _, o := range objs {
		// Namespace-agnostic: the user picks it with -n or an overlay.
		if ns := o.(metav1.Object).GetNamespace(); ns != "" {
			t.Errorf("%T %s sets namespace %q", o, o.(metav1.Object).GetName(), ns)
		}
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			if m.sts != nil {
				t.Fatalf("two StatefulSets: %s and %s", m.sts.Name, o.Name)
			}
			m.sts = o
		case *corev1.Service:
			if m.services[o.Name] != nil {
				t.Fatalf("Service %s defined twice", o.Name)
			}
			m.services[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			if m.pdb != nil {
				t.Fatalf("two PodDisruptionBudgets")
			}
			m.pdb = o
		default:
			t.Fatalf("unexpected object %T", o)
		}
	}
	if m.sts == nil || m.sts.Name != k8sName {
		t.Fatalf("want StatefulSet %s, got %v", k8sName, m.sts)
	}
	if m.pdb == nil {
		t.Fatal("no PodDisruptionBudget")
	}
	for _, name := range []string{k8sName, peerService} {
		if m.services[name] == nil {
			t.Fatalf("no Service %s", name)
		}
	}
	if len(m.services) != 2 {
		t.Errorf("services %v, want only %s and %s", slices.Sorted(maps.Keys(m.services)), k8sName, peerService)
	}
	return m
}

func (m k8sManifests) container(t *testing.T) *corev1.Container {
	t.Helper()
	cs := m.sts.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != containerName {
		t.Fatalf("want one container %q, got %d", containerName, len(cs))
	}
	if n := len(m.sts.Spec.Template.Spec.InitContainers); n != 0 {
		t.Errorf("%d init containers; the image has nothing to run before serve", n)
	}
	return &cs[0]
}

// containerPort returns the container port a name or number refers to.
func containerPort(t *testing.T, c *corev1.Container, ref intstr.IntOrString, proto corev1.Protocol) corev1.ContainerPort {
	t.Helper()
	for _, p := range c.Ports {
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.Protocol != proto {
			continue
		}
		if (ref.Type == intstr.String && p.Name == ref.StrVal) || (ref.Type == intstr.Int && p.ContainerPort == ref.IntVal) {
			return p
		}
	}
	t.Fatalf("port %s/%s names no container port of %s", ref.String(), proto, c.Name)
	return corev1.ContainerPort{}
}

func namedPort(t *testing.T, c *corev1.Container, name string, proto corev1.Protocol) corev1.ContainerPort {
	t.Helper()
	return containerPort(t, c, intstr.FromString(name), proto)
}

func TestKubernetes_ManifestsDecodeStrictly(t *testing.T) {
	m := loadK8s(t)
	t.Logf("files %v: StatefulSet %s, Services %v, PDB %s", m.files, m.sts.Name, slices.Sorted(maps.Keys(m.services)), m.pdb.Name)
}

// TestKubernetes_StrictDecodingFails proves the decoding check can fail: the
// real StatefulSet with one field misspelled, wrongly cased or repeated, or
// under an API version the scheme does not know, is rejected.
func TestKubernetes_StrictDecodingFails(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(k8sDir, "statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(t, data); err != nil {
		t.Fatalf("the unmodified file must decode: %v", err)
	}
	for _, c := range []struct{ name, old, new string }{
		{"misspelled", "readinessProbe:", "readinesProbe:"},
		{"misspelled nested", "path: /readyz", "pth: /readyz"},
		{"wrong case", "terminationGracePeriodSeconds:", "TerminationGracePeriodSeconds:"},
		{"duplicate key", "podManagementPolicy: Parallel", "podManagementPolicy: Parallel\n  podManagementPolicy: OrderedReady"},
		{"unknown version", "apiVersion: apps/v1", "apiVersion: apps/v1beta9"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := strings.Replace(string(data), c.old, c.new, 1)
			if bad == string(data) {
				t.Fatalf("statefulset.yaml has no %q to break", c.old)
			}
			if _, err := decodeStrict(t, []byte(bad)); err == nil {
				t.Fatalf("accepted a StatefulSet with %q replaced by %q", c.old, c.new)
			} else {
				t.Logf("rejected: %v", err)
			}
		})
	}
}

// kustomization is the subset of kustomize's fields this directory may use.
// Anything else (namespace, namePrefix, labels, ...) would change the names
// DISCOVERY_CLUSTER_JOIN and serviceName rely on, so it fails here.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

func TestKubernetes_KustomizationListsEveryManifest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(k8sDir, kustomizationFile))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := sigsyaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s: %v", kustomizationFile, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s: apiVersion/kind = %s/%s", kustomizationFile, k.APIVersion, k.Kind)
	}
	listed := slices.Clone(k.Resources)
	sort.Strings(listed)
	if want := manifestFiles(t); !slices.Equal(listed, want) {
		t.Errorf("%s resources = %v, want exactly the manifests present %v", kustomizationFile, listed, want)
	}
	if len(slices.Compact(slices.Clone(listed))) != len(listed) {
		t.Errorf("%s lists a resource twice: %v", kustomizationFile, k.Resources)
	}
}

// TestKubernetes_KustomizeBuild renders the directory with the real kustomize
// inside kubectl, when it is installed, and decodes the result strictly.
func TestKubernetes_KustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not found; the kustomization is still checked by TestKubernetes_KustomizationListsEveryManifest")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, "kustomize", k8sDir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, stderr.String())
	}
	objs, err := decodeStrict(t, out)
	if err != nil {
		t.Fatalf("kustomize output: %v", err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, fmt.Sprintf("%T/%s", o, o.(metav1.Object).GetName()))
	}
	sort.Strings(got)
	want := []string{"*v1.PodDisruptionBudget/" + k8sName, "*v1.Service/" + k8sName, "*v1.Service/" + peerService, "*v1.StatefulSet/" + k8sName}
	if !slices.Equal(got, want) {
		t.Errorf("kustomize renders %v, want %v", got, want)
	}
}

// podEnv builds the container's environment the way the kubelet does for
// pod podName with IP podIP: valueFrom sources resolved, $(VAR) references
// expanded from the variables defined before them, plus the variables the
// kubelet and runtime add themselves. The Secret's value is secret.
func podEnv(t *testing.T, c *corev1.Container, podName, podIP, secret string) []string {
	t.Helper()
	if len(c.EnvFrom) != 0 {
		// Its keys would be invisible to this test, and a stray DISCOVERY_*
		// key stops the node.
		t.Fatalf("envFrom %+v: set each variable in env", c.EnvFrom)
	}
	vars := map[string]string{}
	env := []string{
		"HOSTNAME=" + podName,
		"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443",
	}
	for _, e := range c.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = expandK8s(e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			switch p := e.ValueFrom.FieldRef.FieldPath; p {
			case "metadata.name":
				v = podName
			case "metadata.namespace":
				v = testNamespace
			case "status.podIP":
				v = podIP
			default:
				t.Fatalf("env %s: fieldRef %s not modelled by this test", e.Name, p)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			switch {
			case ref.Name == secretName && ref.Key == secretKey:
				v = secret
			case ref.Name == secretName && ref.Key == adminTokenKey:
				v = testAdminTok
			default:
				t.Fatalf("env %s: secretKeyRef %s/%s, want the documented %s/%s or %s/%s", e.Name, ref.Name, ref.Key, secretName, secretKey, secretName, adminTokenKey)
			}
		default:
			t.Fatalf("env %s: valueFrom %+v not modelled by this test", e.Name, e.ValueFrom)
		}
		if strings.HasPrefix(e.Name, "DISCOVERY_") && strings.Contains(v, "$(") {
			t.Errorf("env %s = %q: unresolved reference (defined later, or misspelled)", e.Name, v)
		}
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	return env
}

var k8sRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expandK8s applies Kubernetes' dependent-variable rules: $(VAR) becomes the
// value of an earlier variable and stays verbatim when there is none; $$ is a
// literal $.
func expandK8s(s string, vars map[string]string) string {
	return k8sRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

func testSecret(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(key)
}

// loadPodConfig runs the server's loader on the pod's environment, exactly as
// the binary does at start (no flags: the container sets only `serve`).
func loadPodConfig(t *testing.T, c *corev1.Container, podName, podIP, secret string) configs.Config {
	t.Helper()
	if !slices.Equal(c.Args, []string{"serve"}) || len(c.Command) != 0 {
		t.Fatalf("command %q args %q: want the image's entrypoint with args [serve] (flags would bypass this check)", c.Command, c.Args)
	}
	cfg, err := configs.Load(nil, podEnv(t, c, podName, podIP, secret))
	if err != nil {
		t.Fatalf("%s: configs.Load rejects the pod environment: %v", podName, err)
	}
	return cfg
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatalf("address %q: port: %v", addr, err)
	}
	return int32(n)
}

func TestKubernetes_NodeEnvironment(t *testing.T) {
	m := loadK8s(t)
	c := m.container(t)
	keys := map[string]bool{}
	for _, k := range configs.Keys() {
		keys[configs.EnvName(k)] = true
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "DISCOVERY_") && !keys[e.Name] {
			t.Errorf("env %s: no configuration key has this name", e.Name)
		}
		if (e.Name == "DISCOVERY_CLUSTER_SECRET" || e.Name == "DISCOVERY_SECURITY_ADMIN_TOKEN") && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("env %s must come from a secretKeyRef, not a literal value", e.Name)
		}
		if e.Name == "DISCOVERY_SECURITY_ADMIN_TOKEN" && (e.ValueFrom.SecretKeyRef.Optional == nil || !*e.ValueFrom.SecretKeyRef.Optional) {
			t.Errorf("env %s: the admin token is optional in the Secret (a cluster without one still starts)", e.Name)
		}
	}
	httpPort := namedPort(t, c, "http", corev1.ProtocolTCP).ContainerPort
	gossipTCP := namedPort(t, c, "gossip-tcp", corev1.ProtocolTCP).ContainerPort
	gossipUDP := namedPort(t, c, "gossip-udp", corev1.ProtocolUDP).ContainerPort
	if gossipTCP != gossipUDP {
		t.Errorf("gossip ports tcp %d udp %d: memberlist uses one port for both", gossipTCP, gossipUDP)
	}
	peer := m.services[peerService]

	if m.sts.Spec.Replicas == nil {
		t.Fatal("replicas unset")
	}
	secret := testSecret(t)
	hostnames := map[string]bool{}
	for i := range *m.sts.Spec.Replicas {
		pod := fmt.Sprintf("%s-%d", m.sts.Name, i)
		ip := fmt.Sprintf("10.0.0.%d", 7+i)
		t.Run(pod, func(t *testing.T) {
			cfg := loadPodConfig(t, c, pod, ip, secret)
			if want := net.JoinHostPort(ip, strconv.Itoa(int(httpPort))); cfg.HTTP.Advertise != want {
				t.Errorf("http.advertise = %q, want %q (pod IP, container http port)", cfg.HTTP.Advertise, want)
			}
			if want := net.JoinHostPort(ip, strconv.Itoa(int(gossipTCP))); cfg.Cluster.Advertise != want {
				t.Errorf("cluster.advertise = %q, want %q (pod IP, container gossip port)", cfg.Cluster.Advertise, want)
			}
			if p := portOf(t, cfg.HTTP.Addr); p != httpPort {
				t.Errorf("http.addr %q listens on %d, the container port http is %d", cfg.HTTP.Addr, p, httpPort)
			}
			if host, _, _ := net.SplitHostPort(cfg.Cluster.Bind); portOf(t, cfg.Cluster.Bind) != gossipTCP || (host != "0.0.0.0" && host != "") {
				t.Errorf("cluster.bind %q: want all interfaces on the gossip port %d", cfg.Cluster.Bind, gossipTCP)
			}
			// One seed, the headless service: it resolves to every pod.
			if len(cfg.Cluster.Join) != 1 {
				t.Fatalf("cluster.join = %q, want the headless service alone", cfg.Cluster.Join)
			}
			seed := cfg.Cluster.Join[0]
			host, _, err := net.SplitHostPort(seed)
			if err != nil {
				t.Fatalf("cluster.join %q: %v", seed, err)
			}
			if want := peerService + "." + testNamespace + ".svc"; host != want {
				t.Errorf("cluster.join host %q, want the headless service %q", host, want)
			}
			if p := portOf(t, seed); p != gossipTCP || !servicePortIs(peer, p, corev1.ProtocolTCP) || !servicePortIs(peer, p, corev1.ProtocolUDP) {
				t.Errorf("cluster.join %q: port must be the gossip port %d, served by %s over tcp and udp", seed, gossipTCP, peerService)
			}
			if cfg.Node.Hostname != pod {
				t.Errorf("node.hostname = %q, want the pod name %q", cfg.Node.Hostname, pod)
			}
			if hostnames[cfg.Node.Hostname] {
				t.Errorf("node.hostname %q used twice", cfg.Node.Hostname)
			}
			hostnames[cfg.Node.Hostname] = true
			if cfg.Cluster.Secret != secret {
				t.Errorf("cluster.secret does not come from the Secret")
			}
			if cfg.Security.AdminToken != testAdminTok {
				t.Errorf("security.admin_token does not come from the Secret's %s key", adminTokenKey)
			}
			if cfg.Log.Format != "json" {
				t.Errorf("log.format = %q, want json", cfg.Log.Format)
			}
		})
	}
}

func servicePortIs(s *corev1.Service, port int32, proto corev1.Protocol) bool {
	for _, p := range s.Spec.Ports {
		if p.Port == port && (p.Protocol == proto || (p.Protocol == "" && proto == corev1.ProtocolTCP)) {
			return true
		}
	}
	return false
}

// TestKubernetes_RenamedKeyFails proves the environment check can fail.
func TestKubernetes_RenamedKeyFails(t *testing.T) {
	c := loadK8s(t).container(t).DeepCopy()
	renamed := false
	for i := range c.Env {
		if c.Env[i].Name == "DISCOVERY_CLUSTER_JOIN" {
			c.Env[i].Name, renamed = "DISCOVERY_CLUSTER_JOINS", true
		}
	}
	if !renamed {
		t.Fatal("no DISCOVERY_CLUSTER_JOIN to rename")
	}
	if _, err := configs.Load(nil, podEnv(t, c, "discovery-0", "10.0.0.7", testSecret(t))); err == nil {
		t.Fatal("configs.Load accepted DISCOVERY_CLUSTER_JOINS; the manifest check would not catch a renamed key")
	}
}

// TestKubernetes_ServiceLinksDisabled: with service links the kubelet adds
// DISCOVERY_SERVICE_HOST, DISCOVERY_PORT_7171_TCP, ... for the Service
// "discovery", and the node refuses to start on unknown DISCOVERY_*
// variables. The second half proves that.
func TestKubernetes_ServiceLinksDisabled(t *testing.T) {
	m := loadK8s(t)
	if esl := m.sts.Spec.Template.Spec.EnableServiceLinks; esl == nil || *esl {
		t.Error("enableServiceLinks must be false")
	}
	env := podEnv(t, m.container(t), "discovery-0", "10.0.0.7", testSecret(t))
	for _, name := range slices.Sorted(maps.Keys(m.services)) {
		env = append(env, serviceLinkEnv(m.services[name])...)
	}
	if _, err := configs.Load(nil, env); err == nil {
		t.Fatal("configs.Load accepts the service-link variables; then enableServiceLinks: false is not needed")
	} else {
		t.Logf("with service links: %v", err)
	}
}

// serviceLinkEnv is the Docker-links style environment the kubelet injects
// for a Service with a cluster IP (headless ones get none).
func serviceLinkEnv(s *corev1.Service) []string {
	if s.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	ip := "10.96.0.10"
	name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
	var env []string
	for i, p := range s.Spec.Ports {
		proto := strings.ToUpper(string(p.Protocol))
		if proto == "" {
			proto = "TCP"
		}
		port := strconv.Itoa(int(p.Port))
		if i == 0 {
			env = append(env, name+"_SERVICE_HOST="+ip, name+"_SERVICE_PORT="+port,
				name+"_PORT="+strings.ToLower(proto)+"://"+ip+":"+port)
		}
		if p.Name != "" {
			env = append(env, name+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))+"="+port)
		}
		pfx := name + "_PORT_" + port + "_" + proto
		env = append(env, pfx+"="+strings.ToLower(proto)+"://"+ip+":"+port, pfx+"_PROTO="+strings.ToLower(proto),
			pfx+"_PORT="+port, pfx+"_ADDR="+ip)
	}
	return env
}

func TestKubernetes_Probes(t *testing.T) {
	m := loadK8s(t)
	c := m.container(t)
	cfg := loadPodConfig(t, c, "discovery-0", "10.0.0.7", testSecret(t))
	httpPort := portOf(t, cfg.HTTP.Addr)
	for _, p := range []struct {
		kind, path string
		probe      *corev1.Probe
	}{
		{"readinessProbe", "/readyz", c.ReadinessProbe},
		{"livenessProbe", "/healthz", c.LivenessProbe},
	} {
		t.Run(p.kind, func(t *testing.T) {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Fatalf("%s: want an httpGet probe", p.kind)
			}
			g := p.probe.HTTPGet
			if g.Path != p.path {
				t.Errorf("path %q, want %q", g.Path, p.path)
			}
			if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
				t.Errorf("scheme %s: the node serves plain HTTP", g.Scheme)
			}
			cp := containerPort(t, c, g.Port, corev1.ProtocolTCP)
			if cp.Name != "http" || cp.ContainerPort != httpPort {
				t.Errorf("port %s is container port %s/%d; want http on the port of http.addr %q (%d)", g.Port.String(), cp.Name, cp.ContainerPort, cfg.HTTP.Addr, httpPort)
			}
			period, timeout := p.probe.PeriodSeconds, p.probe.TimeoutSeconds
			if period == 0 || timeout == 0 || p.probe.FailureThreshold == 0 {
				t.Errorf("set periodSeconds, timeoutSeconds and failureThreshold explicitly: %+v", p.probe)
			} else if timeout >= period {
				t.Errorf("timeoutSeconds %d must be below periodSeconds %d", timeout, period)
			}
		})
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path == "/readyz" {
		t.Error("liveness on /readyz would restart a node that is still syncing")
	}
}

func TestKubernetes_Services(t *testing.T) {
	m := loadK8s(t)
	c := m.container(t)
	pods := labels.Set(m.sts.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(m.sts.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(pods) {
		t.Fatalf("StatefulSet selector %v must be non-empty and match its pod labels %v (%v)", m.sts.Spec.Selector, pods, err)
	}
	if m.sts.Spec.ServiceName != peerService {
		t.Errorf("serviceName = %q, want the headless service %q", m.sts.Spec.ServiceName, peerService)
	}
	for _, s := range m.services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(pods) {
			t.Errorf("Service %s: selector %v does not select the pods %v", s.Name, s.Spec.Selector, pods)
		}
		for _, p := range s.Spec.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			if cp := containerPort(t, c, target, proto); cp.ContainerPort != p.Port {
				t.Errorf("Service %s port %s: %d targets container port %d; keep them equal: peers dial the port they find, clients the one they are told", s.Name, p.Name, p.Port, cp.ContainerPort)
			}
		}
	}

	peer := m.services[peerService]
	if peer.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("%s: clusterIP %q, want None (headless: DNS returns every pod)", peer.Name, peer.Spec.ClusterIP)
	}
	if !peer.Spec.PublishNotReadyAddresses {
		t.Errorf("%s: publishNotReadyAddresses must be true: a starting node needs seeds before anyone is ready", peer.Name)
	}
	for _, want := range []struct {
		name  string
		proto corev1.Protocol
	}{{"gossip-tcp", corev1.ProtocolTCP}, {"gossip-udp", corev1.ProtocolUDP}, {"http", corev1.ProtocolTCP}} {
		if port := namedPort(t, c, want.name, want.proto).ContainerPort; !servicePortIs(peer, port, want.proto) {
			t.Errorf("%s: no port %d/%s (%s)", peer.Name, port, want.proto, want.name)
		}
	}

	client := m.services[k8sName]
	if client.Spec.ClusterIP == corev1.ClusterIPNone || (client.Spec.Type != "" && client.Spec.Type != corev1.ServiceTypeClusterIP) {
		t.Errorf("%s: want a plain ClusterIP service, got type %q clusterIP %q", client.Name, client.Spec.Type, client.Spec.ClusterIP)
	}
	if client.Spec.PublishNotReadyAddresses {
		t.Errorf("%s: clients must reach ready (synced) nodes only", client.Name)
	}
	if len(client.Spec.Ports) != 1 {
		t.Fatalf("%s: ports %+v, want the HTTP API alone", client.Name, client.Spec.Ports)
	}
	p := client.Spec.Ports[0]
	if cp := containerPort(t, c, p.TargetPort, corev1.ProtocolTCP); cp.Name != "http" || p.Port != 7171 {
		t.Errorf("%s: port %d → %s targets %s, want 7171 → the container port http", client.Name, p.Port, p.TargetPort.String(), cp.Name)
	}
}

func TestKubernetes_PodDisruptionBudget(t *testing.T) {
	m := loadK8s(t)
	pdb := m.pdb
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || pdb.Spec.MinAvailable != nil {
		t.Errorf("want maxUnavailable 1 alone, got maxUnavailable %v minAvailable %v", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(m.sts.Spec.Template.Labels)) {
		t.Errorf("selector %v does not select the pods %v (%v)", pdb.Spec.Selector, m.sts.Spec.Template.Labels, err)
	}
}

func TestKubernetes_SecurityContext(t *testing.T) {
	m := loadK8s(t)
	pod := m.sts.Spec.Template.Spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	sc := m.container(t).SecurityContext
	if sc == nil {
		t.Fatal("container has no securityContext")
	}
	// The container's setting wins over the pod's, as in the kubelet.
	eff := func(c, p *int64) *int64 {
		if c != nil {
			return c
		}
		return p
	}
	effBool := func(c, p *bool) bool {
		if c != nil {
			return *c
		}
		return p != nil && *p
	}
	if !effBool(sc.RunAsNonRoot, pod.RunAsNonRoot) {
		t.Error("runAsNonRoot must be true")
	}
	for name, v := range map[string]*int64{"runAsUser": eff(sc.RunAsUser, pod.RunAsUser), "runAsGroup": eff(sc.RunAsGroup, pod.RunAsGroup)} {
		if v == nil {
			t.Errorf("%s unset, want %d (the image's USER)", name, nonRootID)
		} else if *v != nonRootID {
			t.Errorf("%s = %d, want %d (the image's USER)", name, *v, nonRootID)
		}
	}
	if !effBool(sc.ReadOnlyRootFilesystem, nil) {
		t.Error("readOnlyRootFilesystem must be true (the node writes nothing)")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("capabilities %+v, want drop [ALL] and nothing added (ports 7171, 7946 need none)", sc.Capabilities)
	}
	seccomp := pod.SeccompProfile
	if sc.SeccompProfile != nil {
		seccomp = sc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", seccomp)
	}

	// The ids are the image's own, so the pod and `docker run` agree.
	df, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("USER %d:%d", nonRootID, nonRootID); !regexp.MustCompile(`(?m)^` + want + `\s*$`).Match(df) {
		t.Errorf("deploy/Dockerfile has no %q line; the manifest's ids must match the image", want)
	}
}

// TestKubernetes_Termination: SIGTERM comes after the preStop sleep, and the
// node then needs up to http.shutdown_timeout to announce its leave, drain
// HTTP and replication. The grace period must cover both.
func TestKubernetes_Termination(t *testing.T) {
	m := loadK8s(t)
	c := m.container(t)
	cfg := loadPodConfig(t, c, "discovery-0", "10.0.0.7", testSecret(t))
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		t.Fatal("no preStop hook")
	}
	pre := c.Lifecycle.PreStop
	if pre.Exec != nil {
		t.Error("preStop exec: the image has no shell or sleep binary; use the sleep action")
	}
	if pre.Sleep == nil || pre.Sleep.Seconds <= 0 {
		t.Fatalf("preStop %+v: want a positive sleep action", pre)
	}
	gp := m.sts.Spec.Template.Spec.TerminationGracePeriodSeconds
	if gp == nil {
		t.Fatal("terminationGracePeriodSeconds unset (default 30 s is not a promise)")
	}
	need := cfg.HTTP.ShutdownTimeout + time.Duration(pre.Sleep.Seconds)*time.Second
	if grace := time.Duration(*gp) * time.Second; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %s must exceed preStop sleep %ds + http.shutdown_timeout %s = %s",
			grace, pre.Sleep.Seconds, cfg.HTTP.ShutdownTimeout, need)
	}
}

func TestKubernetes_Scheduling(t *testing.T) {
	m := loadK8s(t)
	spec := m.sts.Spec
	if spec.Replicas == nil || *spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3", spec.Replicas)
	}
	if spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy = %q, want Parallel (a node starts alone)", spec.PodManagementPolicy)
	}
	if len(spec.VolumeClaimTemplates) != 0 || len(spec.Template.Spec.Volumes) != 0 {
		t.Error("volumes: the registry is in memory, and the root filesystem is read-only by design")
	}
	aff := spec.Template.Spec.Affinity
	found := false
	if aff != nil && aff.PodAntiAffinity != nil {
		for _, w := range aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			sel, err := metav1.LabelSelectorAsSelector(w.PodAffinityTerm.LabelSelector)
			if err == nil && w.PodAffinityTerm.TopologyKey == corev1.LabelHostname && !sel.Empty() && sel.Matches(labels.Set(spec.Template.Labels)) {
				found = true
			}
		}
		if len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
			t.Error("required anti-affinity leaves replicas pending on clusters with fewer nodes")
		}
	}
	if !found {
		t.Errorf("want a preferred pod anti-affinity on %s selecting the pods, got %+v", corev1.LabelHostname, aff)
	}

	c := m.container(t)
	if c.Image != "discovery:dev" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q pull %q, want discovery:dev IfNotPresent (override with kustomize images)", c.Image, c.ImagePullPolicy)
	}
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() {
		t.Errorf("requests %v: want cpu and memory", req)
	}
	if lim.Memory().IsZero() || lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("limits %v: want a memory limit >= the request %v", lim, req.Memory())
	}
	if auto := spec.Template.Spec.AutomountServiceAccountToken; auto == nil || *auto {
		t.Error("automountServiceAccountToken should be false: the node never calls the API server")
	}
}

// TestKubernetes_ReadmeCommands keeps the documented commands in step with
// the manifests' names.
func TestKubernetes_ReadmeCommands(t *testing.T) {
	m := loadK8s(t)
	b, err := os.ReadFile(filepath.Join(k8sDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var errs []error
	for _, want := range []string{
		fmt.Sprintf("create secret generic %s --from-literal=%s=", secretName, secretKey),
		fmt.Sprintf("--from-literal=%s=", adminTokenKey),
		"apply -k deploy/kubernetes",
		fmt.Sprintf("DISCOVERY_NODES=%s.", k8sName),
		fmt.Sprintf(".svc:%d", m.services[k8sName].Spec.Ports[0].Port),
	} {
		if !strings.Contains(readme, want) {
			errs = append(errs, fmt.Errorf("README.md does not say %q", want))
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}
