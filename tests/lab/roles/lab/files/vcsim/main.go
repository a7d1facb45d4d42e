// Command vcsim-lab runs the govmomi vCenter simulator (vcsim, govmomi 0.24.2)
// for the lab role: a configurable inventory, loopback-only listeners, real
// credential checking and a small plain-HTTP control API for fault injection
// (ESXi host "not responding"), SOAP latency and SOAP call statistics. It
// also completes ReconfigureComputeResource_Task, whose HA and DRS settings
// 0.24.2 drops (see serveReconfigure).
//
// It is built in GOPATH mode against the Debian packaged govmomi:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o /tmp/vcsim-lab main.go
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

type config struct {
	listen, control, stateFile string
	datastoreDir               string
	username, password         string
	datacenters, clusters      int
	hosts, standalone, vms     int
	delay                      int
}

func parseFlags() (*config, error) {
	c := new(config)
	flag.StringVar(&c.listen, "listen", "127.0.0.1:8989", "SOAP/HTTPS `address` (loopback only, port 0 picks a free port)")
	flag.StringVar(&c.control, "control", "127.0.0.1:8990", "control API plain-HTTP `address` (loopback only)")
	flag.IntVar(&c.datacenters, "datacenters", 1, "number of datacenters")
	flag.IntVar(&c.clusters, "clusters", 2, "clusters per datacenter")
	flag.IntVar(&c.hosts, "hosts", 3, "ESXi hosts per cluster")
	flag.IntVar(&c.standalone, "standalone", 0, "standalone ESXi hosts per datacenter")
	flag.IntVar(&c.vms, "vms", 10, "total number of VMs, spread evenly over all hosts")
	flag.IntVar(&c.delay, "delay", 0, "milliseconds added to every SOAP call")
	flag.StringVar(&c.username, "username", "user", "user name accepted by Login")
	flag.StringVar(&c.password, "password", "pass", "password accepted by Login; when not given, $VCSIM_PASSWORD if set")
	flag.StringVar(&c.stateFile, "state-file", "", "write a JSON description of the running simulator to this `path`")
	flag.StringVar(&c.datastoreDir, "datastore-dir", defaultDatastoreDir(), "parent `directory` of the simulator's throw-away datastore files")
	flag.Parse()

	if flag.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", flag.Args())
	}
	// The environment variable keeps the password out of `ps` output.
	passwordSet := false
	flag.Visit(func(f *flag.Flag) { passwordSet = passwordSet || f.Name == "password" })
	if env := os.Getenv("VCSIM_PASSWORD"); !passwordSet && env != "" {
		c.password = env
	}
	switch {
	case c.username == "" || c.password == "":
		return nil, errors.New("-username and -password must not be empty")
	case c.datacenters < 1:
		return nil, errors.New("-datacenters must be at least 1")
	case c.clusters < 0 || c.hosts < 0 || c.standalone < 0 || c.vms < 0 || c.delay < 0:
		return nil, errors.New("-clusters, -hosts, -standalone, -vms and -delay must not be negative")
	case c.vms > 0 && c.clusters*c.hosts+c.standalone == 0:
		return nil, errors.New("-vms needs at least one ESXi host")
	}
	return c, nil
}

// defaultDatastoreDir prefers tmpfs: the simulator creates five files per VM
// on its datastores, and on a disk-backed /tmp that dominates start-up time
// (measured ~8 ms vs ~1 ms per VM). They take about 4 KiB of tmpfs per VM.
func defaultDatastoreDir() string {
	const shm = "/dev/shm"
	if fi, err := os.Stat(shm); err == nil && fi.IsDir() && syscall.Access(shm, 2 /* W_OK */) == nil {
		return shm
	}
	return os.TempDir()
}

// listenLoopback binds addr, refusing anything but a loopback IP: the
// simulator accepts any client and the control API has no authentication.
func listenLoopback(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == "localhost" {
		host = "127.0.0.1" // do not trust the resolver with the loopback check
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s: only loopback addresses (127.0.0.0/8, ::1) are allowed", addr)
	}
	return net.Listen("tcp", net.JoinHostPort(host, port))
}

// hostInfo is the static part of an ESXi host, discovered once at start-up.
type hostInfo struct {
	Name       string  `json:"name"`
	Moid       string  `json:"moid"`
	Cluster    *string `json:"cluster"` // nil for a standalone host
	Datacenter string  `json:"datacenter"`

	ref, pool, vmFolder types.ManagedObjectReference
}

type clusterInfo struct {
	Name       string   `json:"name"`
	Datacenter string   `json:"datacenter"`
	Hosts      []string `json:"hosts"`
}

type inventory struct {
	datacenters []string
	clusters    []clusterInfo
	hosts       []*hostInfo          // creation order
	byName      map[string]*hostInfo // for /hosts/{name}/...
	groups      [][]*hostInfo        // hosts per compute resource, for VM placement
}

// discover walks the inventory model.Create built, reading the simulator's
// registry directly (nothing is being served yet, so no locking is needed).
func discover(root types.ManagedObjectReference) *inventory {
	m := simulator.Map
	inv := &inventory{byName: make(map[string]*hostInfo)}

	for _, ref := range m.Get(root).(*simulator.Folder).ChildEntity {
		dc, ok := m.Get(ref).(*simulator.Datacenter)
		if !ok {
			continue
		}
		inv.datacenters = append(inv.datacenters, dc.Name)

		for _, ref := range m.Get(dc.HostFolder).(*simulator.Folder).ChildEntity {
			var cr *mo.ComputeResource
			var cluster *string
			switch obj := m.Get(ref).(type) {
			case *simulator.ClusterComputeResource:
				cr, cluster = &obj.ComputeResource, &obj.Name
			case *mo.ComputeResource: // a standalone host's own compute resource
				cr = obj
			default:
				continue
			}

			var group []*hostInfo
			var names []string
			for _, href := range cr.Host {
				h := &hostInfo{
					Name:       m.Get(href).(*simulator.HostSystem).Name,
					Moid:       href.Value,
					Cluster:    cluster,
					Datacenter: dc.Name,
					ref:        href,
					pool:       *cr.ResourcePool,
					vmFolder:   dc.VmFolder,
				}
				group = append(group, h)
				names = append(names, h.Name)
				inv.hosts = append(inv.hosts, h)
				inv.byName[h.Name] = h
			}
			inv.groups = append(inv.groups, group)
			if cluster != nil {
				inv.clusters = append(inv.clusters, clusterInfo{Name: *cluster, Datacenter: dc.Name, Hosts: names})
			}
		}
	}
	return inv
}

// createVMs creates exactly total powered-on VMs. Model.Machine cannot express
// that in 0.24.2 (it means "per resource pool and per standalone host"), so
// this goes through the simulator's own CreateVM_Task/PowerOnVM_Task over the
// in-process client, like Model.Create does.
func (inv *inventory) createVMs(ctx context.Context, c *vim25.Client, total int) error {
	// Interleave compute resources (host 0 of every cluster, then host 1, ...)
	// so that both clusters and hosts differ by at most one VM.
	var order []*hostInfo
	for i := 0; len(order) < len(inv.hosts); i++ {
		for _, g := range inv.groups {
			if i < len(g) {
				order = append(order, g[i])
			}
		}
	}

	for i := 0; i < total; i++ {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted after %d of %d VMs", i, total)
		}
		h := order[i%len(order)]
		spec := vmSpec(fmt.Sprintf("%s_VM%d", h.Name, i/len(order)))

		res, err := taskResult(object.NewFolder(c, h.vmFolder).CreateVM(ctx, spec,
			object.NewResourcePool(c, h.pool), object.NewHostSystem(c, h.ref)))
		if err != nil {
			return fmt.Errorf("create %s: %v", spec.Name, err)
		}
		vm := object.NewVirtualMachine(c, res.(types.ManagedObjectReference))
		if _, err = taskResult(vm.PowerOn(ctx)); err != nil {
			return fmt.Errorf("power on %s: %v", spec.Name, err)
		}
	}
	return nil
}

// vmSpec mirrors the VMs Model.Create makes: SCSI disk, CD-ROM and one NIC.
func vmSpec(name string) types.VirtualMachineConfigSpec {
	spec := types.VirtualMachineConfigSpec{
		Name:    name,
		GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
		Files:   &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
	}
	var devices object.VirtualDeviceList
	scsi, _ := devices.CreateSCSIController("pvscsi")
	ide, _ := devices.CreateIDEController()
	cdrom, _ := devices.CreateCdrom(ide.(*types.VirtualIDEController))
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
		spec.Files.VmPathName+" "+path.Join(name, "disk1.vmdk"))
	disk.CapacityInKB = 1024
	nic := esx.EthernetCard
	devices = append(devices, scsi, cdrom, disk, &nic)
	spec.DeviceChange, _ = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	return spec
}

// taskResult reads a finished task straight from the registry. The simulator
// runs tasks synchronously inside the *_Task call, so they are complete on
// return; this skips the PropertyCollector round trips of Task.WaitForResult,
// which keeps creating thousands of VMs fast.
func taskResult(task *object.Task, err error) (types.AnyType, error) {
	if err != nil {
		return nil, err
	}
	info := simulator.Map.Get(task.Reference()).(*simulator.Task).Info
	if info.Error != nil {
		return nil, errors.New(info.Error.LocalizedMessage)
	}
	return info.Result, nil
}

// lab holds the run-time state shared by the SOAP wrapper and the control API.
type lab struct {
	inv     *inventory
	delayMS atomic.Int64 // added to every SOAP call, see soapHandler

	mu       sync.Mutex // guards calls and byMethod
	calls    int64
	byMethod map[string]int64
}

// soapHandler wraps the simulator's mux to count SOAP calls by method and to
// add latency. The delay is applied here rather than through
// Model.DelayConfig: Service keeps a pointer to that struct and reads it
// without synchronisation, so changing it while serving would be a data race.
func (l *lab) soapHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && (r.URL.Path == vim25.Path || r.URL.Path == vim25.Path+"/vimService") {
			body, err := io.ReadAll(r.Body)
			_ = r.Body.Close()
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))

			method := soapMethod(body)
			l.mu.Lock()
			l.calls++
			l.byMethod[method]++
			l.mu.Unlock()

			if d := l.delayMS.Load(); d > 0 {
				select {
				case <-time.After(time.Duration(d) * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
			if method == reconfigureMethod {
				body = withReferenceType(body)
				r.Body = io.NopCloser(bytes.NewReader(body))
				r.ContentLength = int64(len(body))
				serveReconfigure(next, w, r, body)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// withReferenceType names a managed object reference given where the WSDL
// allows any type (a ClusterDasVmConfigSpec's removeKey) as the simulator's
// decoder knows it. pyVmomi sends it as xsi:type="ManagedObject", which
// vCenter accepts and 0.24.2 decodes as nothing: the remove of a per-VM HA
// override then fails inside the simulator instead of removing it.
func withReferenceType(body []byte) []byte {
	return bytes.ReplaceAll(body, []byte(`xsi:type="ManagedObject"`), []byte(`xsi:type="ManagedObjectReference"`))
}

// reconfigureMethod is the SOAP method serveReconfigure completes.
const reconfigureMethod = "ReconfigureComputeResource_Task"

// serveReconfigure serves ReconfigureComputeResource_Task. The 0.24.2
// simulator applies a ClusterConfigSpecEx's rules, groups and VM overrides
// but drops its dasConfig and drsConfig: the task succeeds and the cluster's
// HA and DRS settings read back as they were. So the call is served by the
// simulator into a buffer and, once its task has succeeded, the spec's
// dasConfig and drsConfig are applied to the cluster's configurationEx the
// way vCenter does (applyClusterConfig) before the client gets the answer:
// a client that sees the task sees the settings. Any other request (a
// malformed one, a standalone host's ComputeResource, a failed task) is left
// entirely to the simulator.
func serveReconfigure(next http.Handler, w http.ResponseWriter, r *http.Request, body []byte) {
	var req *types.ReconfigureComputeResource_Task
	if method, err := simulator.UnmarshalBody(vimType, body); err == nil {
		req, _ = method.Body.(*types.ReconfigureComputeResource_Task)
	}
	if req == nil || req.This.Type != "ClusterComputeResource" {
		next.ServeHTTP(w, r)
		return
	}
	rec := &bufferedResponse{header: make(http.Header), code: http.StatusOK}
	next.ServeHTTP(rec, r)
	if rec.code == http.StatusOK && taskSucceeded(rec.body.Bytes()) {
		if err := applyClusterConfig(req); err != nil {
			log.Printf("%s of %s: %v", reconfigureMethod, req.This.Value, err)
		}
	}
	for key, values := range rec.header {
		w.Header()[key] = values
	}
	w.WriteHeader(rec.code)
	_, _ = w.Write(rec.body.Bytes())
}

// vimType resolves the xsi:type names of a request, with or without a
// namespace prefix (as the simulator's own decoder does).
func vimType(name string) (reflect.Type, bool) {
	if t, ok := types.TypeFunc()(name); ok {
		return t, ok
	}
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return types.TypeFunc()(name[i+1:])
	}
	return nil, false
}

// bufferedResponse is an http.ResponseWriter that keeps the response.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferedResponse) WriteHeader(code int)        { b.code = code }

// taskSucceeded tells whether the task a *_Task response returns (its
// returnval) has succeeded. The simulator runs a task to its end inside
// the call, so its state is final here.
func taskSucceeded(response []byte) bool {
	d := xml.NewDecoder(bytes.NewReader(response))
	for {
		tok, err := d.Token()
		if err != nil {
			return false
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "returnval" {
			var id string
			if d.DecodeElement(&id, &se) != nil {
				return false
			}
			task, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: strings.TrimSpace(id)}).(*simulator.Task)
			if !ok {
				return false
			}
			var state types.TaskInfoState
			simulator.Map.WithLock(task, func() { state = task.Info.State })
			return state == types.TaskInfoStateSuccess
		}
	}
}

// applyClusterConfig applies the dasConfig and drsConfig of a
// ClusterConfigSpecEx to the cluster, as vCenter does: with modify true only
// the properties the spec sets change (nested data objects such as
// defaultVmSettings property by property, anything else, the admission
// control policy included, replaced whole); with modify false a given
// dasConfig or drsConfig replaces the cluster's. The new configuration is a
// copy (readers of the old one see no partial change), set through
// Registry.Update so that PropertyCollector updates report it.
func applyClusterConfig(req *types.ReconfigureComputeResource_Task) error {
	spec, ok := req.Spec.(*types.ClusterConfigSpecEx)
	if !ok || (spec.DasConfig == nil && spec.DrsConfig == nil) {
		return nil
	}
	cluster, ok := simulator.Map.Get(req.This).(*simulator.ClusterComputeResource)
	if !ok {
		return fmt.Errorf("no cluster %s", req.This.Value)
	}
	var err error
	simulator.Map.WithLock(cluster, func() {
		current, ok := cluster.ConfigurationEx.(*types.ClusterConfigInfoEx)
		if !ok {
			err = fmt.Errorf("configurationEx is a %T, not a ClusterConfigInfoEx", cluster.ConfigurationEx)
			return
		}
		config := *current
		if spec.DasConfig != nil {
			config.DasConfig = *spec.DasConfig
			if req.Modify {
				config.DasConfig = merged(current.DasConfig, *spec.DasConfig).(types.ClusterDasConfigInfo)
			}
		}
		if spec.DrsConfig != nil {
			config.DrsConfig = *spec.DrsConfig
			if req.Modify {
				config.DrsConfig = merged(current.DrsConfig, *spec.DrsConfig).(types.ClusterDrsConfigInfo)
			}
		}
		simulator.Map.Update(cluster, []types.PropertyChange{{Name: "configurationEx", Val: &config}})
	})
	return err
}

// merged returns a copy of the data object dst with every property that src
// sets (a non-zero value: unset ones are nil, "" or 0 in govmomi) taken from
// src. Data objects, inline or behind a pointer that dst also sets, are
// merged property by property; anything else is replaced. Neither dst nor
// what it points to is modified.
func merged(dst, src interface{}) interface{} {
	return mergeValue(reflect.ValueOf(dst), reflect.ValueOf(src)).Interface()
}

func mergeValue(dst, src reflect.Value) reflect.Value {
	out := reflect.New(dst.Type()).Elem()
	out.Set(dst)
	for i := 0; i < src.NumField(); i++ {
		s, d := src.Field(i), out.Field(i)
		switch {
		case s.IsZero():
		case s.Kind() == reflect.Struct:
			d.Set(mergeValue(d, s))
		case s.Kind() == reflect.Ptr && s.Elem().Kind() == reflect.Struct && !d.IsNil():
			p := reflect.New(s.Elem().Type())
			p.Elem().Set(mergeValue(d.Elem(), s.Elem()))
			d.Set(p)
		default:
			d.Set(s)
		}
	}
	return out
}

// soapMethod returns the name of the first element inside soap:Body.
func soapMethod(body []byte) string {
	d := xml.NewDecoder(bytes.NewReader(body))
	inBody := false
	for {
		tok, err := d.RawToken()
		if err != nil {
			return "(unparsable)"
		}
		if se, ok := tok.(xml.StartElement); ok {
			if inBody {
				return se.Name.Local
			}
			inBody = se.Name.Local == "Body"
		}
	}
}

// startSOAP serves the simulator on ln through l.soapHandler.
//
// Service.NewServer in 0.24.2 binds its own listener (panicking on error) and
// offers no hook around its ServeMux, so we let it do its set-up on a
// throw-away loopback port, close that server and serve the same mux on our
// listener, pointing the few places that recorded the address at ours.
func startSOAP(svc *simulator.Service, ln net.Listener, user, pass string, l *lab) *http.Server {
	svc.TLS = new(tls.Config)
	// Any user other than simulator.DefaultLogin makes SessionManager.validLogin
	// compare name and password exactly, faulting with InvalidLogin otherwise.
	svc.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(user, pass)}
	tmp := svc.NewServer()
	tlsConfig := tmp.TLS // clone of svc.TLS with the certificate filled in
	tmp.Close()

	addr := ln.Addr().String()
	svc.Listen.Host = addr // svc.Listen now is NewServer's URL, carrying User
	simulator.Map.SessionManager().ServiceHostName = addr
	for _, s := range simulator.Map.OptionManager().Setting {
		o := s.GetOptionValue()
		if v, ok := o.Value.(string); ok && (strings.HasSuffix(o.Key, ".uri") || o.Key == "vcsim.server.url") {
			if u, err := url.Parse(v); err == nil {
				u.Host = addr
				o.Value = u.String()
			}
		}
	}

	srv := &http.Server{Handler: l.soapHandler(svc.ServeMux), ReadHeaderTimeout: time.Minute}
	go serve(srv, tls.NewListener(ln, tlsConfig))
	return srv
}

func serve(srv *http.Server, ln net.Listener) {
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatalf("serve %s: %v", ln.Addr(), err)
	}
}

// setFailed marks a host notResponding (and its VMs disconnected) or
// connected again. Registry.Update applies the change to the object and
// queues it for PropertyCollectors, so RetrievePropertiesEx and
// WaitForUpdatesEx both see it; the object lock serialises us with SOAP
// calls. Objects already in the wanted state are skipped (idempotent).
func setFailed(h *hostInfo, failed bool) error {
	hostState := types.HostSystemConnectionStateConnected
	vmState := types.VirtualMachineConnectionStateConnected
	if failed {
		hostState = types.HostSystemConnectionStateNotResponding
		vmState = types.VirtualMachineConnectionStateDisconnected
	}

	m := simulator.Map
	host, ok := m.Get(h.ref).(*simulator.HostSystem)
	if !ok {
		return fmt.Errorf("host %s no longer exists", h.Name)
	}
	m.WithLock(host, func() {
		if host.Runtime.ConnectionState != hostState {
			// summary.runtime points at runtime, but PropertyCollector filters
			// match change names, so both paths are reported.
			m.Update(host, []types.PropertyChange{
				{Name: "runtime.connectionState", Val: hostState},
				{Name: "summary.runtime.connectionState", Val: hostState},
			})
		}
	})

	// Select VMs by runtime.host rather than HostSystem.vm: 0.24.2's
	// RelocateVM_Task updates the former but not the latter.
	for _, e := range m.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		m.WithLock(vm, func() {
			if vm.Runtime.Host == nil || *vm.Runtime.Host != h.ref || vm.Runtime.ConnectionState == vmState {
				return
			}
			m.Update(vm, []types.PropertyChange{
				{Name: "runtime.connectionState", Val: vmState},
				{Name: "summary.runtime.connectionState", Val: vmState},
			})
		})
	}
	return nil
}

type hostStatus struct {
	*hostInfo
	ConnectionState string `json:"connection_state"`
	InMaintenance   bool   `json:"in_maintenance"`
}

func status(h *hostInfo) hostStatus {
	st := hostStatus{hostInfo: h, ConnectionState: "removed"}
	if host, ok := simulator.Map.Get(h.ref).(*simulator.HostSystem); ok {
		simulator.Map.WithLock(host, func() {
			st.ConnectionState = string(host.Runtime.ConnectionState)
			st.InMaintenance = host.Runtime.InMaintenanceMode
		})
	}
	return st
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...interface{}) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// only restricts h to the given HTTP method.
func only(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "use %s", method)
			return
		}
		h(w, r)
	}
}

func (l *lab) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
	})
	mux.HandleFunc("/health", only(http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	}))
	mux.HandleFunc("/hosts", only(http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
		list := make([]hostStatus, 0, len(l.inv.hosts))
		for _, h := range l.inv.hosts {
			list = append(list, status(h))
		}
		writeJSON(w, http.StatusOK, list)
	}))
	// POST /hosts/{name}/fail and POST /hosts/{name}/restore
	mux.HandleFunc("/hosts/", only(http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, "/hosts/")
		i := strings.LastIndexByte(rest, '/')
		if i < 0 || (rest[i+1:] != "fail" && rest[i+1:] != "restore") {
			writeError(w, http.StatusNotFound, "use /hosts/{name}/fail or /hosts/{name}/restore")
			return
		}
		h, ok := l.inv.byName[rest[:i]]
		if !ok {
			writeError(w, http.StatusNotFound, "unknown host %q", rest[:i])
			return
		}
		if err := setFailed(h, rest[i+1:] == "fail"); err != nil {
			writeError(w, http.StatusGone, "%v", err)
			return
		}
		log.Printf("control: host %s %s", h.Name, rest[i+1:])
		writeJSON(w, http.StatusOK, status(h))
	}))
	mux.HandleFunc("/delay", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
		case http.MethodPut:
			ms, err := strconv.ParseInt(r.URL.Query().Get("ms"), 10, 32)
			if err != nil || ms < 0 {
				writeError(w, http.StatusBadRequest, "ms must be a non-negative integer")
				return
			}
			l.delayMS.Store(ms)
			log.Printf("control: SOAP delay %d ms", ms)
		default:
			w.Header().Set("Allow", "GET, PUT")
			writeError(w, http.StatusMethodNotAllowed, "use GET or PUT")
			return
		}
		writeJSON(w, http.StatusOK, map[string]int64{"ms": l.delayMS.Load()})
	})
	mux.HandleFunc("/stats", only(http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		defer l.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]interface{}{"soap_calls": l.calls, "by_method": l.byMethod})
	}))
	mux.HandleFunc("/stats/reset", only(http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.calls, l.byMethod = 0, make(map[string]int64)
		l.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	}))
	return mux
}

// writeState writes v as JSON to file atomically (temporary file + rename),
// so readers never see a partial file.
func writeState(file string, v interface{}) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(append(data, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

func run() error {
	cfg, err := parseFlags()
	if err != nil {
		return err
	}
	// Caught from the start so that a signal during a long build still
	// leads to a clean exit.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Bind both ports first: a bad or busy address should fail immediately,
	// not after building a large inventory.
	soapLn, err := listenLoopback(cfg.listen)
	if err != nil {
		return fmt.Errorf("-listen: %v", err)
	}
	defer soapLn.Close()
	ctlLn, err := listenLoopback(cfg.control)
	if err != nil {
		return fmt.Errorf("-control: %v", err)
	}
	defer ctlLn.Close()

	// Model.Create puts each datastore in ioutil.TempDir("", ...), so TMPDIR
	// is the only way to choose where they go.
	if err = os.Setenv("TMPDIR", cfg.datastoreDir); err != nil {
		return err
	}

	start := time.Now()
	model := simulator.VPX()
	model.Datacenter = cfg.datacenters
	model.Cluster = cfg.clusters
	model.ClusterHost = cfg.hosts
	model.Host = cfg.standalone
	model.Machine = 0 // -vms is a total; the VMs are created by createVMs
	if err = model.Create(); err != nil {
		return fmt.Errorf("create model: %v", err)
	}
	defer model.Remove() // the simulator's temporary datastore directories

	// Service is a soap.RoundTripper that dispatches in process.
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		return err
	}
	inv := discover(client.ServiceContent.RootFolder)
	if err = inv.createVMs(ctx, client, cfg.vms); err != nil {
		return err
	}
	nvms := len(simulator.Map.All("VirtualMachine"))
	log.Printf("inventory: %d datacenters, %d clusters, %d hosts, %d VMs built in %s",
		len(inv.datacenters), len(inv.clusters), len(inv.hosts), nvms, time.Since(start).Round(time.Millisecond))

	l := &lab{inv: inv, byMethod: make(map[string]int64)}
	l.delayMS.Store(int64(cfg.delay))

	soapSrv := startSOAP(model.Service, soapLn, cfg.username, cfg.password, l)
	ctlSrv := &http.Server{Handler: l.controlHandler(), ReadHeaderTimeout: 10 * time.Second}
	go serve(ctlSrv, ctlLn)

	soapAddr := soapLn.Addr().(*net.TCPAddr)
	sdkURL := "https://" + soapAddr.String() + vim25.Path
	ctlURL := "http://" + ctlLn.Addr().String()
	log.Printf("SOAP %s (user %q), control %s", sdkURL, cfg.username, ctlURL)

	if cfg.stateFile != "" {
		standalone := []map[string]string{}
		for _, h := range inv.hosts {
			if h.Cluster == nil {
				standalone = append(standalone, map[string]string{"name": h.Name, "datacenter": h.Datacenter})
			}
		}
		err = writeState(cfg.stateFile, map[string]interface{}{
			"url":              sdkURL,
			"host":             soapAddr.IP.String(),
			"port":             soapAddr.Port,
			"control":          ctlURL,
			"pid":              os.Getpid(),
			"username":         cfg.username,
			"datacenters":      inv.datacenters,
			"clusters":         inv.clusters,
			"standalone_hosts": standalone,
			"vms":              nvms,
		})
		if err != nil {
			return fmt.Errorf("state file: %v", err)
		}
		defer os.Remove(cfg.stateFile)
	}

	<-ctx.Done()
	stop() // a second signal kills the process the default way
	log.Print("shutting down")

	// Long-polling WaitForUpdates calls can hold Shutdown; cut them off.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range []*http.Server{ctlSrv, soapSrv} {
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}
	return nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if err := run(); err != nil {
		log.Printf("vcsim-lab: %v", err)
		os.Exit(1)
	}
}
