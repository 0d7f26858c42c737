// Minimal vCenter simulator for layerbot's tests, built from Debian's
// golang-github-vmware-govmomi-dev (GOPATH mode, no module download).
// Prints one JSON line {"url": ...} once listening; exits when stdin closes.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/url"
	"os"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address")
	useTLS := flag.Bool("tls", true, "serve HTTPS with a self-signed certificate")
	user := flag.String("user", "layerbot@vsphere.local", "accepted user name")
	pass := flag.String("pass", "s3cret", "accepted password")
	idle := flag.Duration("session-idle", 0, "expire sessions idle this long (0: never)")
	certFile := flag.String("cert", "", "PEM certificate to serve (default: Go's built-in test certificate, a 1024-bit key OpenSSL refuses to trust)")
	keyFile := flag.String("key", "", "PEM private key of -cert")
	flag.Parse()

	simulator.SessionIdleTimeout = *idle
	model := simulator.VPX()
	model.Datastore = 2
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
		if *certFile != "" {
			pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				log.Fatal(err)
			}
			model.Service.TLS.Certificates = []tls.Certificate{pair}
		}
	}
	server := model.Service.NewServer()
	line, _ := json.Marshal(map[string]string{"url": server.URL.String()})
	os.Stdout.Write(append(line, '\n'))
	_, _ = io.Copy(io.Discard, os.Stdin)
	server.Close()
	model.Remove()
}
