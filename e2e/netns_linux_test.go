//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// site is a network namespace on this machine, standing for a remote site
// behind NAT: a private address on a veth pair to the host, a default
// route through the host, source NAT on the way in (the server sees the
// host's address, not the site's) and on the way out, and a firewall
// that, as a NAT does, lets no connection in. A process started in it
// reaches the host only by dialling out.
type site struct {
	ns       string
	hostVeth string
	hostIP   string // the host's address on the veth, where the site dials
	siteIP   string
	subnet   string
	siteVeth string
	host     [][]string // iptables rules added on the host, to delete
}

// newSite makes the namespace, or says why it cannot: not root, no ip or
// iptables, or a kernel without network namespaces or NAT. Cleanup
// removes everything it made.
func newSite(t testing.TB) (*site, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, errors.New("not root")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed (apt-get install iproute2 iptables)", tool)
		}
	}
	id := os.Getpid() % 250
	s := &site{
		ns:       fmt.Sprintf("outpost-site-%d", os.Getpid()),
		hostVeth: fmt.Sprintf("ops%dh", os.Getpid()%100000),
		siteVeth: fmt.Sprintf("ops%ds", os.Getpid()%100000),
		subnet:   fmt.Sprintf("10.213.%d.0/30", id),
		hostIP:   fmt.Sprintf("10.213.%d.1", id),
		siteIP:   fmt.Sprintf("10.213.%d.2", id),
	}
	t.Cleanup(s.remove)
	steps := [][]string{
		{"ip", "netns", "add", s.ns},
		{"ip", "link", "add", s.hostVeth, "type", "veth", "peer", "name", s.siteVeth},
		{"ip", "link", "set", s.siteVeth, "netns", s.ns},
		{"ip", "addr", "add", s.hostIP + "/30", "dev", s.hostVeth},
		{"ip", "link", "set", s.hostVeth, "up"},
		{"ip", "netns", "exec", s.ns, "ip", "addr", "add", s.siteIP + "/30", "dev", s.siteVeth},
		{"ip", "netns", "exec", s.ns, "ip", "link", "set", s.siteVeth, "up"},
		{"ip", "netns", "exec", s.ns, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", s.ns, "ip", "route", "add", "default", "via", s.hostIP},
		// Nothing may connect into the site; its own connections' replies
		// come back.
		{"ip", "netns", "exec", s.ns, "iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"},
		{"ip", "netns", "exec", s.ns, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
		{"ip", "netns", "exec", s.ns, "iptables", "-P", "INPUT", "DROP"},
	}
	for _, st := range steps {
		if err := runTool(st...); err != nil {
			return nil, err
		}
	}
	// The site's connections reach the host's server with the host's own
	// address, and would leave the host masqueraded.
	for _, rule := range [][]string{
		{"-t", "nat", "-A", "INPUT", "-s", s.siteIP, "-j", "SNAT", "--to-source", s.hostIP},
		{"-t", "nat", "-A", "POSTROUTING", "-s", s.subnet, "!", "-o", s.hostVeth, "-j", "MASQUERADE"},
	} {
		if err := runTool(append([]string{"iptables"}, rule...)...); err != nil {
			return nil, err
		}
		s.host = append(s.host, rule)
	}
	return s, nil
}

// command is a command that runs inside the site.
func (s *site) command(path string, args ...string) (string, []string) {
	return "ip", append([]string{"netns", "exec", s.ns, path}, args...)
}

// cut drops every packet between the site and the host, as a failed link
// does: connections stall, nothing is refused. restore lifts it.
func (s *site) cut() error {
	return errors.Join(
		runTool("ip", "netns", "exec", s.ns, "iptables", "-I", "OUTPUT", "1", "-o", s.siteVeth, "-j", "DROP"),
		runTool("ip", "netns", "exec", s.ns, "iptables", "-I", "INPUT", "1", "-i", s.siteVeth, "-j", "DROP"))
}

func (s *site) restore() error {
	return errors.Join(
		runTool("ip", "netns", "exec", s.ns, "iptables", "-D", "OUTPUT", "-o", s.siteVeth, "-j", "DROP"),
		runTool("ip", "netns", "exec", s.ns, "iptables", "-D", "INPUT", "-i", s.siteVeth, "-j", "DROP"))
}

func (s *site) remove() {
	for _, rule := range s.host {
		del := append([]string{"iptables"}, rule...)
		for i, a := range del {
			if a == "-A" {
				del[i] = "-D"
			}
		}
		_ = runTool(del...)
	}
	// Deleting the namespace deletes the veth pair and the site's rules.
	_ = runTool("ip", "netns", "del", s.ns)
	_ = runTool("ip", "link", "del", s.hostVeth)
}

func runTool(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
