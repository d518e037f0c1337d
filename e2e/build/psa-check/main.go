// psa-check evaluates every Pod and every pod template (Deployment,
// StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob) of
// multi-document YAML files against a Pod Security Standards level with the
// API server's own checks (k8s.io/pod-security-admission), so that a chart or
// an operator's rendered objects are checked exactly as a namespace labelled
// pod-security.kubernetes.io/enforce would check them, without a cluster.
//
//	psa-check [--level restricted] [--version latest] [--allow-empty] [FILE...]
//
// Reads stdin when no FILE (or "-") is given. Prints one line per violation,
// "Kind/name: check: detail", and exits 1 if there is any; exits 2 on
// unreadable input or when no pod spec was found at all (a render that lost
// its pods must not pass; --allow-empty permits it).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// podSpec is one pod (or pod template) found in the input.
type podSpec struct {
	ref  string // Kind/name, with the namespace when the object has one
	meta *metav1.ObjectMeta
	spec *corev1.PodSpec
}

type header struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Items      []json            `json:"items"`
}

// json keeps a List's items undecoded until their kind is known.
type json = map[string]interface{}

func main() {
	level := flag.String("level", "restricted", "Pod Security level: privileged, baseline or restricted")
	version := flag.String("version", "latest", `policy version: "latest" or "v1.N"`)
	allowEmpty := flag.Bool("allow-empty", false, "exit 0 when the input holds no Pod or pod template")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [--level L] [--version V] [--allow-empty] [FILE...]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	os.Exit(run(*level, *version, *allowEmpty, flag.Args(), os.Stdin, os.Stdout, os.Stderr))
}

func run(levelName, versionName string, allowEmpty bool, files []string, stdin io.Reader, stdout, stderr io.Writer) int {
	lvl, err := psaapi.ParseLevel(levelName)
	if err != nil {
		fmt.Fprintf(stderr, "psa-check: %v\n", err)
		return 2
	}
	ver, err := psaapi.ParseVersion(versionName)
	if err != nil {
		fmt.Fprintf(stderr, "psa-check: %v\n", err)
		return 2
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "psa-check: %v\n", err)
		return 2
	}
	if len(files) == 0 {
		files = []string{"-"}
	}
	var pods []podSpec
	for _, f := range files {
		found, err := readFile(f, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "psa-check: %s: %v\n", f, err)
			return 2
		}
		pods = append(pods, found...)
	}
	if len(pods) == 0 && !allowEmpty {
		fmt.Fprintln(stderr, "psa-check: no Pod or pod template in the input (--allow-empty to accept)")
		return 2
	}
	lv := psaapi.LevelVersion{Level: lvl, Version: ver}
	violations := 0
	for _, p := range pods {
		for _, r := range evaluator.EvaluatePod(lv, p.meta, p.spec) {
			if r.Allowed {
				continue
			}
			violations++
			if r.ForbiddenDetail != "" {
				fmt.Fprintf(stdout, "%s: %s: %s\n", p.ref, r.ForbiddenReason, r.ForbiddenDetail)
			} else {
				fmt.Fprintf(stdout, "%s: %s\n", p.ref, r.ForbiddenReason)
			}
		}
	}
	fmt.Fprintf(stderr, "psa-check: %d pod spec(s) checked against %s, %d violation(s)\n", len(pods), lv.String(), violations)
	if violations > 0 {
		return 1
	}
	return 0
}

func readFile(name string, stdin io.Reader) ([]podSpec, error) {
	var in io.Reader = stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var pods []podSpec
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return pods, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		found, err := decode(raw)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		pods = append(pods, found...)
	}
}

// decode returns the pod specs of one YAML document (none for other kinds;
// a List's items are looked at one by one).
func decode(raw []byte) ([]podSpec, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var h header
	if err := yaml.Unmarshal(raw, &h); err != nil {
		return nil, err
	}
	if h.Kind == "" { // a document of comments only, as helm renders
		return nil, nil
	}
	if h.Kind == "List" || (len(h.Items) > 0 && len(h.Kind) > 4 && h.Kind[len(h.Kind)-4:] == "List") {
		var pods []podSpec
		for i, item := range h.Items {
			b, err := yaml.Marshal(item)
			if err != nil {
				return nil, err
			}
			found, err := decode(b)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			pods = append(pods, found...)
		}
		return pods, nil
	}
	ref := h.Kind + "/" + h.Metadata.Name
	if h.Metadata.Namespace != "" {
		ref = h.Kind + "/" + h.Metadata.Namespace + "/" + h.Metadata.Name
	}
	// Each kind: the object to decode into and where its pod template is
	// once decoded (a ReplicationController's may be absent).
	var obj interface{}
	var pod func() (*metav1.ObjectMeta, *corev1.PodSpec)
	fromTemplate := func(t *corev1.PodTemplateSpec) func() (*metav1.ObjectMeta, *corev1.PodSpec) {
		return func() (*metav1.ObjectMeta, *corev1.PodSpec) { return &t.ObjectMeta, &t.Spec }
	}
	switch h.Kind {
	case "Pod":
		o := &corev1.Pod{}
		obj, pod = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) { return &o.ObjectMeta, &o.Spec }
	case "Deployment":
		o := &appsv1.Deployment{}
		obj, pod = o, fromTemplate(&o.Spec.Template)
	case "StatefulSet":
		o := &appsv1.StatefulSet{}
		obj, pod = o, fromTemplate(&o.Spec.Template)
	case "DaemonSet":
		o := &appsv1.DaemonSet{}
		obj, pod = o, fromTemplate(&o.Spec.Template)
	case "ReplicaSet":
		o := &appsv1.ReplicaSet{}
		obj, pod = o, fromTemplate(&o.Spec.Template)
	case "ReplicationController":
		o := &corev1.ReplicationController{}
		obj, pod = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) {
			if o.Spec.Template == nil {
				return nil, nil
			}
			return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		}
	case "Job":
		o := &batchv1.Job{}
		obj, pod = o, fromTemplate(&o.Spec.Template)
	case "CronJob":
		o := &batchv1.CronJob{}
		obj, pod = o, fromTemplate(&o.Spec.JobTemplate.Spec.Template)
	case "PodTemplate":
		o := &corev1.PodTemplate{}
		obj, pod = o, fromTemplate(&o.Template)
	default:
		return nil, nil
	}
	// Strict decoding: a misspelt field (say "securityContex") is an error
	// here rather than a silently missing setting.
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	meta, spec := pod()
	if spec == nil {
		return nil, nil
	}
	return []podSpec{{ref, meta, spec}}, nil
}
