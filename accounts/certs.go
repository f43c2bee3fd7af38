package accounts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles are the PEM files of a TLS setup: a CA, the server's certificate
// and key, and one client certificate and key for mTLS.
type TLSFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// TLSFiles names the files EnsureTLS writes.
func (a *Authority) TLSFiles() TLSFiles {
	d := filepath.Join(a.dir, "tls")
	return TLSFiles{
		CA:         filepath.Join(d, "ca.pem"),
		ServerCert: filepath.Join(d, "server.pem"), ServerKey: filepath.Join(d, "server-key.pem"),
		ClientCert: filepath.Join(d, "client.pem"), ClientKey: filepath.Join(d, "client-key.pem"),
	}
}

// EnsureTLS makes, on first use, a small ECDSA P-256 CA with a server
// certificate for hosts (plus localhost and the loopback addresses) and a
// client certificate, for trying TLS and mTLS out. Production deployments
// bring their own certificates.
func (a *Authority) EnsureTLS(hosts []string) (TLSFiles, error) {
	f := a.TLSFiles()
	if _, err := os.Stat(f.CA); err == nil {
		return f, nil
	}
	if err := os.MkdirAll(filepath.Dir(f.CA), 0o700); err != nil {
		return f, fmt.Errorf("tls directory: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "Outpost CA", Organization: []string{"Outpost"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return f, fmt.Errorf("create CA: %w", err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return f, err
	}
	leaf := func(cn string, usage x509.ExtKeyUsage, certPath, keyPath string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		t := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"Outpost"}},
			NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
				if ip := net.ParseIP(h); ip != nil {
					t.IPAddresses = append(t.IPAddresses, ip)
				} else {
					t.DNSNames = append(t.DNSNames, h)
				}
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("create %s certificate: %w", cn, err)
		}
		return writePEMs(certPath, keyPath, der, key)
	}
	if err := leaf("outpost-server", x509.ExtKeyUsageServerAuth, f.ServerCert, f.ServerKey); err != nil {
		return f, err
	}
	if err := leaf("outpost-client", x509.ExtKeyUsageClientAuth, f.ClientCert, f.ClientKey); err != nil {
		return f, err
	}
	// The CA goes last: its presence marks a finished set.
	return f, writePEMs(f.CA, filepath.Join(filepath.Dir(f.CA), "ca-key.pem"), caDER, caKey)
}

func writePEMs(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePrivate(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})); err != nil {
		return err
	}
	return writePrivate(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
