package objstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Defaults of Options: the one place they live.
const (
	// DefaultRegion signs requests when Options.Region is empty.
	DefaultRegion = "us-east-1"
	// DefaultRequestTimeout bounds each attempt's connect, TLS handshake
	// and wait for the response's headers.
	DefaultRequestTimeout = 30 * time.Second
	// DefaultMaxAttempts is how many times a request is made before a
	// retriable failure is returned (1 try and 4 retries).
	DefaultMaxAttempts = 5
	// DefaultMaxBackoff caps the jittered exponential wait between
	// attempts.
	DefaultMaxBackoff = 5 * time.Second
	// DefaultListPageSize is how many keys a listing request asks for
	// (S3's maximum).
	DefaultListPageSize = 1000
)

// MaxPutSize is the largest object a Put writes: S3's limit for a single
// PUT (larger objects need multipart uploads, which this store does not
// do).
const MaxPutSize = 5 << 30

// conditionalConflict is the error code of S3's 409 answer to a
// conditional write that raced another write of the same key.
const conditionalConflict = "ConditionalRequestConflict"

// redacted stands for a secret in String, GoString and LogValue.
const redacted = "[redacted]"

// Options configure an S3 store. Zero fields take the defaults above;
// Validate says what is refused.
type Options struct {
	// Bucket is the bucket, which must exist (required).
	Bucket string
	// Endpoint is the service's base URL, http:// or https://, e.g.
	// http://127.0.0.1:7070 for a local server; empty means AWS S3 in
	// Region.
	Endpoint string
	// Region signs the requests (default DefaultRegion).
	Region string
	// PathStyle addresses objects as <endpoint>/<bucket>/<key> instead of
	// <bucket>.<endpoint host>/<key>; most S3-compatible servers need it.
	PathStyle bool

	// CAFile is a PEM file of certificate authorities trusted for an
	// https endpoint, besides the system's.
	CAFile string
	// InsecureSkipVerify accepts any certificate of an https endpoint
	// (testing only: a man in the middle reads the credentials' requests
	// and the checkpoints).
	InsecureSkipVerify bool

	// AccessKeyID and SecretAccessKey are static credentials; both or
	// neither. Neither: the SDK's default chain (AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, AWS_PROFILE's shared config, web identity,
	// the instance or task role). SecretAccessKey and SessionToken are
	// secrets: String, GoString, LogValue and every error leave them out.
	AccessKeyID     string
	SecretAccessKey string
	// SessionToken goes with temporary static credentials (optional).
	SessionToken string

	// RequestTimeout bounds each attempt's connect, TLS handshake and
	// wait for the response's headers (default DefaultRequestTimeout); a
	// stalled attempt is retried. It does not bound the transfer of a
	// body: the caller's context does.
	RequestTimeout time.Duration
	// MaxAttempts bounds the attempts of each request whose failure is
	// retriable: 5xx answers, throttling, connection errors, timeouts,
	// and 409 ConditionalRequestConflict (default DefaultMaxAttempts; 1
	// never retries).
	MaxAttempts int
	// MaxBackoff caps the wait between attempts (default
	// DefaultMaxBackoff).
	MaxBackoff time.Duration
	// ListPageSize is how many keys one listing request asks for, 1 to
	// 1000 (default DefaultListPageSize); List pages through any number.
	ListPageSize int
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.ListPageSize == 0 {
		o.ListPageSize = DefaultListPageSize
	}
	o.Endpoint = strings.TrimRight(o.Endpoint, "/")
	return o
}

// Validate refuses options New cannot work with, naming the field: no
// bucket or one S3 cannot name, an endpoint that is not an http(s) URL,
// TLS settings for a plain http endpoint, a CA file that cannot be read or
// holds no certificate, half of the static credentials, and negative or
// out-of-range numbers. It makes no request.
func (o Options) Validate() error {
	if err := ValidBucket(o.Bucket); err != nil {
		return fmt.Errorf("objstore: Options.Bucket %q: %w", o.Bucket, err)
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("objstore: Options.Endpoint %q is not an http:// or https:// URL of a host (without user, query or fragment)", redactURL(o.Endpoint))
		}
		if u.Scheme == "http" && (o.CAFile != "" || o.InsecureSkipVerify) {
			return fmt.Errorf("objstore: Options.CAFile or InsecureSkipVerify set for the plain http endpoint %s: TLS settings need an https:// endpoint", redactURL(o.Endpoint))
		}
	}
	if o.CAFile != "" {
		if _, err := loadCAFile(o.CAFile); err != nil {
			return err
		}
	}
	if (o.AccessKeyID == "") != (o.SecretAccessKey == "") {
		return errors.New("objstore: Options.AccessKeyID and SecretAccessKey go together: set both for static credentials, or neither for the default chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)")
	}
	if o.SessionToken != "" && o.AccessKeyID == "" {
		return errors.New("objstore: Options.SessionToken is set without AccessKeyID and SecretAccessKey")
	}
	switch {
	case o.RequestTimeout < 0:
		return fmt.Errorf("objstore: Options.RequestTimeout %s is negative", o.RequestTimeout)
	case o.MaxAttempts < 0:
		return fmt.Errorf("objstore: Options.MaxAttempts %d is negative", o.MaxAttempts)
	case o.MaxBackoff < 0:
		return fmt.Errorf("objstore: Options.MaxBackoff %s is negative", o.MaxBackoff)
	case o.ListPageSize < 0 || o.ListPageSize > 1000:
		return fmt.Errorf("objstore: Options.ListPageSize %d is outside 1..1000", o.ListPageSize)
	}
	return nil
}

// ValidBucket applies S3's bucket naming rules: 3 to 63 characters of
// lowercase letters, digits, '.' and '-', starting and ending with a letter
// or digit. The error says which rule b breaks.
func ValidBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return errors.New("a bucket name has 3 to 63 characters")
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && c != '.' && c != '-' {
			return fmt.Errorf("a bucket name holds lowercase letters, digits, '.' and '-', not %q", c)
		}
		if !alnum && (i == 0 || i == len(b)-1) {
			return errors.New("a bucket name starts and ends with a letter or digit")
		}
	}
	return nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("objstore: Options.CAFile: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("objstore: Options.CAFile %s holds no PEM certificate", path)
	}
	return pool, nil
}

// where names the service for errors: the endpoint, or AWS S3's region.
func (o Options) where() string {
	if o.Endpoint != "" {
		return redactURL(o.Endpoint)
	}
	return "AWS S3 (region " + o.Region + ")"
}

// redactURL hides the user information of a URL (which Validate refuses,
// but which may hold a password), parsable or not.
func redactURL(raw string) string {
	rest := raw
	scheme := ""
	if i := strings.Index(raw, "://"); i >= 0 {
		scheme, rest = raw[:i+3], raw[i+3:]
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		return scheme + redacted + rest[i:]
	}
	return raw
}

// credentialsSource says where the credentials come from, without
// secrets.
func (o Options) credentialsSource() string {
	if o.AccessKeyID != "" {
		return "access key " + o.AccessKeyID
	}
	return "the default credential chain"
}

// String describes the options with defaults applied and secrets
// redacted, for logs and errors.
func (o Options) String() string {
	d := o.withDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, "s3://%s at %s region=%s path_style=%t", d.Bucket, d.where(), d.Region, d.PathStyle)
	if d.CAFile != "" {
		fmt.Fprintf(&b, " ca_file=%s", d.CAFile)
	}
	if d.InsecureSkipVerify {
		b.WriteString(" insecure_skip_verify=true")
	}
	if d.AccessKeyID != "" {
		fmt.Fprintf(&b, " access_key_id=%s secret_access_key=%s", d.AccessKeyID, redacted)
		if d.SessionToken != "" {
			b.WriteString(" session_token=" + redacted)
		}
	} else {
		b.WriteString(" credentials=default-chain")
	}
	fmt.Fprintf(&b, " request_timeout=%s max_attempts=%d max_backoff=%s list_page_size=%d",
		d.RequestTimeout, d.MaxAttempts, d.MaxBackoff, d.ListPageSize)
	return b.String()
}

// GoString is String, so that %#v redacts the secrets too.
func (o Options) GoString() string { return "objstore.Options{" + o.String() + "}" }

// MarshalJSON encodes what LogValue gives: the options with defaults
// applied and secrets redacted.
func (o Options) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	for _, a := range o.LogValue().Group() {
		m[a.Key] = a.Value.Any()
		if a.Value.Kind() == slog.KindDuration {
			m[a.Key] = a.Value.Duration().String()
		}
	}
	return json.Marshal(m)
}

// LogValue gives slog the options with defaults applied and secrets
// redacted.
func (o Options) LogValue() slog.Value {
	d := o.withDefaults()
	attrs := []slog.Attr{
		slog.String("bucket", d.Bucket),
		slog.String("endpoint", d.where()),
		slog.String("region", d.Region),
		slog.Bool("path_style", d.PathStyle),
	}
	if d.CAFile != "" {
		attrs = append(attrs, slog.String("ca_file", d.CAFile))
	}
	if d.InsecureSkipVerify {
		attrs = append(attrs, slog.Bool("insecure_skip_verify", true))
	}
	if d.AccessKeyID != "" {
		attrs = append(attrs, slog.String("access_key_id", d.AccessKeyID), slog.String("secret_access_key", redacted))
		if d.SessionToken != "" {
			attrs = append(attrs, slog.String("session_token", redacted))
		}
	} else {
		attrs = append(attrs, slog.String("credentials", "default-chain"))
	}
	attrs = append(attrs,
		slog.Duration("request_timeout", d.RequestTimeout),
		slog.Int("max_attempts", d.MaxAttempts),
		slog.Duration("max_backoff", d.MaxBackoff),
		slog.Int("list_page_size", d.ListPageSize))
	return slog.GroupValue(attrs...)
}

// S3 is a Store of one bucket of an S3-compatible service. It is safe for
// concurrent use. Retriable failures (5xx, throttling, connection errors,
// timeouts, 409 ConditionalRequestConflict) are retried by the SDK's
// standard retryer, up to Options.MaxAttempts attempts with jittered
// exponential backoff; what is left is returned.
//
// 409 ConditionalRequestConflict is retried rather than reported: AWS S3
// answers it when a conditional write raced another write of the same key
// still in flight, and the conflicting write was not applied. A retry asks
// the same question again once the other write has settled, and gets the
// real answer: success, or 412 (ErrExists, ErrPreconditionFailed) when the
// other write won. Reporting the 409 at once would make the caller re-read
// and decide on a key whose fate is not settled yet. The retry is bounded
// like every other; a conflict that outlasts MaxAttempts is returned as
// ErrPreconditionFailed (the put was not applied; who won is unknown).
//
// A conditional put whose earlier attempt may have been applied (its
// answer was lost to a timeout, a dropped connection or a 5xx) and whose
// retry is then refused is checked once more: when the key holds exactly
// the put's bytes, the put is reported as the success it was.
type S3 struct {
	client *s3.Client
	tr     *http.Transport
	opts   Options // with defaults
}

var _ Store = (*S3)(nil)

// New returns a store of opts.Bucket after checking that the bucket is
// reachable with the credentials (a HeadBucket). It fails, naming the
// endpoint and the bucket, on invalid options (see Validate), when no
// credentials can be found, when the endpoint cannot be reached within
// the retries, when the service refuses the credentials (403), when the
// bucket does not exist (404) or lives in another region (301), or when
// ctx ends first.
func New(ctx context.Context, opts Options) (*S3, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()

	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: o.RequestTimeout, KeepAlive: 30 * time.Second}
	tr.DialContext = dialer.DialContext
	tr.TLSHandshakeTimeout = o.RequestTimeout
	tr.ResponseHeaderTimeout = o.RequestTimeout
	tr.MaxIdleConnsPerHost = 64 // parallel uploads of one checkpoint
	if o.CAFile != "" || o.InsecureSkipVerify {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // opted into, documented as testing only
		if o.CAFile != "" {
			pool, err := loadCAFile(o.CAFile)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	}

	var creds aws.CredentialsProvider
	if o.AccessKeyID != "" {
		creds = credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, o.SessionToken)
	} else {
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(o.Region))
		if err != nil {
			tr.CloseIdleConnections()
			return nil, fmt.Errorf("objstore: loading the default AWS configuration for bucket %s at %s: %w", o.Bucket, o.where(), err)
		}
		creds = cfg.Credentials
	}
	if _, err := creds.Retrieve(ctx); err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("objstore: no credentials for bucket %s at %s: the static keys are not set and the default chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, shared config, web identity, instance role) found none: %w",
			o.Bucket, o.where(), err)
	}

	s3o := s3.Options{
		Region:       o.Region,
		UsePathStyle: o.PathStyle,
		Credentials:  creds,
		HTTPClient:   &http.Client{Transport: tr},
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = o.MaxAttempts
			so.MaxBackoff = o.MaxBackoff
			// The attempts bound the retries; a client-wide retry quota
			// would add failures of its own after a burst of errors.
			so.RateLimiter = ratelimit.None
			so.Retryables = append(so.Retryables, retry.RetryableErrorCode{
				Codes: map[string]struct{}{conditionalConflict: {}},
			})
		}),
		DisableLogOutputChecksumValidationSkipped: true,
	}
	if o.Endpoint != "" {
		s3o.BaseEndpoint = aws.String(o.Endpoint)
	}
	s := &S3{client: s3.New(s3o), tr: tr, opts: o}
	if err := s.checkBucket(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// checkBucket asks for the bucket and explains a refusal.
func (s *S3) checkBucket(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.opts.Bucket)})
	if err == nil {
		return nil
	}
	o := s.opts
	code, status := apiError(err)
	if (status == http.StatusForbidden || status == http.StatusNotFound) && ctx.Err() == nil {
		// A HEAD answer has no body, so no error code: a missing bucket,
		// an unknown access key and a wrong secret can look alike (versitygw
		// answers an unknown access key with 404). A listing's answer says
		// which it is.
		_, lerr := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(o.Bucket), MaxKeys: aws.Int32(1)})
		if lcode, lstatus := apiError(lerr); lstatus == http.StatusForbidden || lstatus == http.StatusNotFound {
			code, status, err = lcode, lstatus, lerr
		}
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("objstore: checking bucket %s at %s: %w", o.Bucket, o.where(), err)
	case status == http.StatusForbidden || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "XAdminUserNotFound":
		why := "the access key or the secret is wrong, or the key lacks permission on the bucket"
		switch code {
		case "InvalidAccessKeyId", "XAdminUserNotFound": // AWS's 403, versitygw's 404
			why = "the service knows no such access key"
		case "SignatureDoesNotMatch":
			why = "the secret access key is wrong"
		case "AccessDenied":
			why = "the key lacks permission on the bucket"
		}
		return fmt.Errorf("objstore: the S3 service at %s refused the credentials (%s) for bucket %s (%d %s): %s: %w",
			o.where(), o.credentialsSource(), o.Bucket, status, code, why, err)
	case status == http.StatusNotFound:
		return fmt.Errorf("objstore: bucket %s does not exist at %s (404 %s); create it first: %w", o.Bucket, o.where(), code, err)
	case status == http.StatusMovedPermanently:
		return fmt.Errorf("objstore: bucket %s is not in region %s at %s (301; the service says region %q): %w",
			o.Bucket, o.Region, o.where(), responseHeader(err, "X-Amz-Bucket-Region"), err)
	case errors.As(err, new(*tls.CertificateVerificationError)):
		return fmt.Errorf("objstore: the TLS certificate of the S3 endpoint %s is not trusted (checking bucket %s): name its authority in the CA file option: %w", o.where(), o.Bucket, err)
	case status == 0:
		return fmt.Errorf("objstore: the S3 endpoint %s is unreachable (checking bucket %s, up to %d attempts): %w", o.where(), o.Bucket, o.MaxAttempts, err)
	}
	return fmt.Errorf("objstore: checking bucket %s at %s: %w", o.Bucket, o.where(), err)
}

// String names the bucket and the endpoint.
func (s *S3) String() string { return "s3://" + s.opts.Bucket + " at " + s.opts.where() }

// Close releases idle connections. The store still works after it (a
// call opens new connections); its owner simply stops using it.
func (s *S3) Close() error {
	s.tr.CloseIdleConnections()
	return nil
}

func (s *S3) loc(key string) string { return "s3://" + s.opts.Bucket + "/" + key }

// Put implements Store.
func (s *S3) Put(ctx context.Context, key string, body io.ReadSeeker, opts PutOptions) (Info, error) {
	loc := s.loc(key) + opts.Condition()
	if err := validatePut(key, opts); err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: %w", loc, err)
	}
	start, err := body.Seek(0, io.SeekCurrent)
	if err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: finding the body's offset: %w", loc, err)
	}
	end, err := body.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = body.Seek(start, io.SeekStart)
	}
	if err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: finding the body's size: %w", loc, err)
	}
	size := end - start
	if size > MaxPutSize {
		return Info{}, fmt.Errorf("objstore: put %s: %d bytes is more than one PUT takes (%d)", loc, size, int64(MaxPutSize))
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.opts.Bucket),
		Key:           aws.String(key),
		Body:          body,
		ContentLength: aws.Int64(size),
	}
	if opts.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if opts.IfMatch != "" {
		in.IfMatch = aws.String(opts.IfMatch)
	}
	attempts := 0
	out, err := s.client.PutObject(ctx, in, countAttempts(&attempts))
	if err == nil {
		return Info{Key: key, Size: size, ETag: quoteETag(aws.ToString(out.ETag))}, nil
	}
	code, status := apiError(err)
	conditional := opts.IfNoneMatch || opts.IfMatch != ""
	refused := status == http.StatusPreconditionFailed || code == conditionalConflict ||
		(opts.IfMatch != "" && isNoSuchKey(code, status))
	if conditional && refused && attempts > 1 && ctx.Err() == nil {
		// An earlier attempt may have been applied before its answer was
		// lost: then the refusal is of our own write.
		if info, ok := s.holds(ctx, key, body, start); ok {
			return info, nil
		}
	}
	switch {
	case code == "ObjectParentIsFile" || code == "ExistingObjectIsDirectory":
		return Info{}, fmt.Errorf("objstore: put %s: %w (409 %s): %w", loc, ErrKeyConflict, code, err)
	case !conditional || !refused:
		return Info{}, s.opError("put", loc, code, err)
	case code == conditionalConflict:
		return Info{}, fmt.Errorf("objstore: put %s: %w: other writes of the key conflicted (409 %s) on all %d attempts: %w",
			loc, ErrPreconditionFailed, code, attempts, err)
	case opts.IfNoneMatch:
		return Info{}, fmt.Errorf("objstore: put %s: %w: %w", loc, ErrExists, err)
	case status == http.StatusPreconditionFailed:
		return Info{}, fmt.Errorf("objstore: put %s: %w: the object's ETag is no longer %s: %w", loc, ErrPreconditionFailed, opts.IfMatch, err)
	default:
		return Info{}, fmt.Errorf("objstore: put %s: %w: the object does not exist: %w", loc, ErrPreconditionFailed, err)
	}
}

// holds reports whether key holds exactly the bytes of body from start,
// and the object's Info if so. Any failure to tell is a no.
func (s *S3) holds(ctx context.Context, key string, body io.ReadSeeker, start int64) (Info, bool) {
	rc, info, err := s.Get(ctx, key, GetOptions{})
	if err != nil {
		return Info{}, false
	}
	defer rc.Close()
	if _, err := body.Seek(start, io.SeekStart); err != nil {
		return Info{}, false
	}
	same, err := sameContent(body, rc)
	if err != nil || !same {
		return Info{}, false
	}
	info.LastModified = time.Time{} // as Put's result
	return info, true
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string, opts GetOptions) (io.ReadCloser, Info, error) {
	loc := s.loc(key)
	if err := validateGet(key, opts); err != nil {
		return nil, Info{}, fmt.Errorf("objstore: get %s: %w", loc, err)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)}
	ranged := opts.Offset != 0 || opts.Length != 0
	if ranged {
		r := "bytes=" + strconv.FormatInt(opts.Offset, 10) + "-"
		if opts.Length > 0 {
			r += strconv.FormatInt(opts.Offset+opts.Length-1, 10)
		}
		in.Range = aws.String(r)
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		code, status := apiError(err)
		switch {
		case isNoSuchKey(code, status):
			return nil, Info{}, fmt.Errorf("objstore: get %s: %w: %w", loc, ErrNotFound, err)
		case status == http.StatusRequestedRangeNotSatisfiable:
			return nil, Info{}, fmt.Errorf("objstore: get %s: range from byte %d: nothing to read (416): %w", loc, opts.Offset, err)
		}
		return nil, Info{}, s.opError("get", loc, code, err)
	}
	info := Info{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         quoteETag(aws.ToString(out.ETag)),
		LastModified: aws.ToTime(out.LastModified),
	}
	if ranged {
		cr := aws.ToString(out.ContentRange) // bytes 0-9/100
		i := strings.LastIndexByte(cr, '/')
		total, perr := strconv.ParseInt(cr[i+1:], 10, 64)
		if i < 0 || perr != nil {
			_ = out.Body.Close()
			return nil, Info{}, fmt.Errorf("objstore: get %s: the ranged answer's Content-Range %q names no size", loc, cr)
		}
		info.Size = total
	}
	return out.Body, info, nil
}

// Stat implements Store. A 404 answer carries no error code, so a Stat
// that gets one asks for the bucket before it reports ErrNotFound.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	loc := s.loc(key)
	if err := ValidateKey(key); err != nil {
		return Info{}, fmt.Errorf("objstore: stat %s: %w", loc, err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)})
	if err != nil {
		code, status := apiError(err)
		if status == http.StatusNotFound {
			if berr := s.bucketGone(ctx); berr != nil {
				return Info{}, fmt.Errorf("objstore: stat %s: %w", loc, berr)
			}
			return Info{}, fmt.Errorf("objstore: stat %s: %w: %w", loc, ErrNotFound, err)
		}
		return Info{}, s.opError("stat", loc, code, err)
	}
	return Info{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         quoteETag(aws.ToString(out.ETag)),
		LastModified: aws.ToTime(out.LastModified),
	}, nil
}

// bucketGone returns nil when the bucket answers, else why not.
func (s *S3) bucketGone(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.opts.Bucket)})
	if err == nil {
		return nil
	}
	if _, status := apiError(err); status == http.StatusNotFound {
		return fmt.Errorf("bucket %s does not exist at %s: %w", s.opts.Bucket, s.opts.where(), err)
	}
	return fmt.Errorf("checking bucket %s after a 404: %w", s.opts.Bucket, err)
}

// List implements Store. It fails, rather than return a partial listing,
// when the service ends a page as truncated without a new continuation
// token.
func (s *S3) List(ctx context.Context, prefix string) ([]Info, error) {
	loc := s.loc(prefix)
	in := &s3.ListObjectsV2Input{
		Bucket:  aws.String(s.opts.Bucket),
		MaxKeys: aws.Int32(int32(s.opts.ListPageSize)),
	}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	out := []Info{}
	for pages := 1; ; pages++ {
		page, err := s.client.ListObjectsV2(ctx, in)
		if err != nil {
			code, _ := apiError(err)
			return nil, s.opError(fmt.Sprintf("list (page %d)", pages), loc, code, err)
		}
		for _, o := range page.Contents {
			out = append(out, Info{
				Key:          aws.ToString(o.Key),
				Size:         aws.ToInt64(o.Size),
				ETag:         quoteETag(aws.ToString(o.ETag)),
				LastModified: aws.ToTime(o.LastModified),
			})
		}
		if !aws.ToBool(page.IsTruncated) {
			break
		}
		next := aws.ToString(page.NextContinuationToken)
		if next == "" || next == aws.ToString(in.ContinuationToken) {
			return nil, fmt.Errorf("objstore: list %s: page %d is truncated but names no new continuation token (%q); the listing would be incomplete", loc, pages, next)
		}
		in.ContinuationToken = aws.String(next)
	}
	sortInfos(out)
	return out, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	loc := s.loc(key)
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("objstore: delete %s: %w", loc, err)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)})
	if err != nil {
		code, status := apiError(err)
		if isNoSuchKey(code, status) {
			return nil
		}
		return s.opError("delete", loc, code, err)
	}
	return nil
}

// opError wraps an error no sentinel describes, saying so when the bucket
// is gone.
func (s *S3) opError(op, loc, code string, err error) error {
	if code == "NoSuchBucket" {
		return fmt.Errorf("objstore: %s %s: bucket %s does not exist at %s: %w", op, loc, s.opts.Bucket, s.opts.where(), err)
	}
	return fmt.Errorf("objstore: %s %s: %w", op, loc, err)
}

// apiError returns the service's error code and HTTP status, when err
// carries them (a connection error carries neither).
func apiError(err error) (code string, status int) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

// isNoSuchKey tells a missing key from a missing bucket (both are 404)
// and from a 404 of something that is no S3 service, by the error code.
// HEAD answers carry no code: the SDK calls every 404 of HeadObject
// NotFound, so Stat checks the bucket itself.
func isNoSuchKey(code string, status int) bool {
	return status == http.StatusNotFound && (code == "NoSuchKey" || code == "NotFound")
}

// responseHeader returns a header of the HTTP answer err carries.
func responseHeader(err error, name string) string {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.Header.Get(name)
	}
	return ""
}

// countAttempts counts the HTTP attempts of one call into *n.
func countAttempts(n *int) func(*s3.Options) {
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Insert(middleware.FinalizeMiddlewareFunc("onceflowCountAttempts",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					*n++
					return next.HandleFinalize(ctx, in)
				}), "Retry", middleware.After)
		})
	}
}
