/* fdpeer: a test-only freeDiameter extension that makes freeDiameterd a Cx (3GPP 16777216)
 * client or server, so the DRA tests have freeDiameter on both sides.
 *
 * Loaded with  LoadExtension = "fdpeer.fdx" : "MODE OUT [FIFO]";
 *   MODE "client": reads commands from FIFO, one per line:
 *        "send TAG REALM COUNT [RR]"  send COUNT User-Authorization-Requests to
 *        Destination-Realm REALM (User-Name TAG-i, with a Route-Record RR if given); every
 *        answer or expiry becomes one line in OUT:
 *        "ANS TAG-i rc=N origin=HOST e2e=0x.. req_e2e=0x.. flags=0x.."  or  "EXP TAG-i".
 *   MODE "server": answers every UAR with 2001 and writes
 *        "REQ USER hbh=0x.. e2e=0x.. flags=0x.." to OUT (flags 0x10 is the T bit).
 *   MODE "dict": writes the AVP definitions of freeDiameter's dictionary (vendors 0 and 3GPP,
 *        after the dict_* extensions loaded before it) to OUT and does nothing else.
 * Built by the test fixture with the system compiler (libfreediameter-dev); test code only.
 */
#include <freeDiameter/extension.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CX_APP 16777216
#define VENDOR_3GPP 10415
#define UAR_CODE 300

static struct dict_object *d_app, *d_vendor, *d_uar, *d_sid, *d_dr, *d_un, *d_ass, *d_rc, *d_oh,
	*d_vsai, *d_vid, *d_aai, *d_rr;
static FILE *out;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t reader;
static char fifo_path[512];
static struct disp_hdl *srv_hdl;

static void emit(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&out_lock);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	fflush(out);
	pthread_mutex_unlock(&out_lock);
}

static int find(enum dict_object_type type, int crit, const void *what, struct dict_object **res)
{
	return fd_dict_search(fd_g_config->cnf_dict, type, crit, what, res, ENOENT);
}

static int dict_setup(void)
{
	struct dict_vendor_data vd = { VENDOR_3GPP, "3GPP" };
	struct dict_application_data ad = { CX_APP, "3GPP Cx" };
	struct dict_cmd_data rq = { UAR_CODE, "User-Authorization-Request",
		CMD_FLAG_REQUEST | CMD_FLAG_PROXIABLE | CMD_FLAG_ERROR,
		CMD_FLAG_REQUEST | CMD_FLAG_PROXIABLE };
	struct dict_cmd_data an = { UAR_CODE, "User-Authorization-Answer",
		CMD_FLAG_REQUEST | CMD_FLAG_PROXIABLE, CMD_FLAG_PROXIABLE };
	/* Public-Identity (3GPP TS 29.229): Kamailio's UARs carry it with the M bit */
	struct dict_avp_data pi = { 601, VENDOR_3GPP, "Public-Identity",
		AVP_FLAG_VENDOR | AVP_FLAG_MANDATORY, AVP_FLAG_VENDOR | AVP_FLAG_MANDATORY,
		AVP_TYPE_OCTETSTRING };
	struct dict_object *d_pi;
	struct dict_avp_request pi_req = { VENDOR_3GPP, 601, NULL };
	vendor_id_t vid = VENDOR_3GPP;
	application_id_t aid = CX_APP;

	if (find(DICT_VENDOR, VENDOR_BY_ID, &vid, &d_vendor))
		CHECK_FCT(fd_dict_new(fd_g_config->cnf_dict, DICT_VENDOR, &vd, NULL, &d_vendor));
	if (find(DICT_APPLICATION, APPLICATION_BY_ID, &aid, &d_app))
		CHECK_FCT(fd_dict_new(fd_g_config->cnf_dict, DICT_APPLICATION, &ad, d_vendor, &d_app));
	if (find(DICT_AVP, AVP_BY_CODE_AND_VENDOR, &pi_req, &d_pi))
		CHECK_FCT(fd_dict_new(fd_g_config->cnf_dict, DICT_AVP, &pi, NULL, &d_pi));
	CHECK_FCT(fd_dict_new(fd_g_config->cnf_dict, DICT_COMMAND, &rq, d_app, &d_uar));
	CHECK_FCT(fd_dict_new(fd_g_config->cnf_dict, DICT_COMMAND, &an, d_app, NULL));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Session-Id", &d_sid));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Destination-Realm", &d_dr));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "User-Name", &d_un));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Auth-Session-State", &d_ass));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Result-Code", &d_rc));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Origin-Host", &d_oh));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Vendor-Specific-Application-Id", &d_vsai));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Vendor-Id", &d_vid));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Auth-Application-Id", &d_aai));
	CHECK_FCT(find(DICT_AVP, AVP_BY_NAME, "Route-Record", &d_rr));
	return 0;
}

static int add_os(msg_or_avp *to, struct dict_object *model, const char *s)
{
	struct avp *a;
	union avp_value v;
	CHECK_FCT(fd_msg_avp_new(model, 0, &a));
	v.os.data = (uint8_t *)s;
	v.os.len = strlen(s);
	CHECK_FCT(fd_msg_avp_setvalue(a, &v));
	return fd_msg_avp_add(to, MSG_BRW_LAST_CHILD, a);
}

static int add_u32(msg_or_avp *to, struct dict_object *model, uint32_t u)
{
	struct avp *a;
	union avp_value v;
	CHECK_FCT(fd_msg_avp_new(model, 0, &a));
	v.u32 = u;
	CHECK_FCT(fd_msg_avp_setvalue(a, &v));
	return fd_msg_avp_add(to, MSG_BRW_LAST_CHILD, a);
}

/* The text of an OctetString-like AVP, or "-" */
static void avp_text(struct msg *m, struct dict_object *model, char *buf, size_t len)
{
	struct avp *a = NULL;
	struct avp_hdr *h;
	snprintf(buf, len, "-");
	if (fd_msg_search_avp(m, model, &a) || !a || fd_msg_avp_hdr(a, &h) || !h->avp_value)
		return;
	snprintf(buf, len, "%.*s", (int)h->avp_value->os.len, (char *)h->avp_value->os.data);
}

static void on_answer(void *data, struct msg **ans)
{
	char *tag = data, origin[256];
	struct avp *a = NULL;
	struct avp_hdr *h;
	struct msg_hdr *mh, *qh;
	struct msg *q = NULL;
	unsigned rc = 0;

	if (!fd_msg_search_avp(*ans, d_rc, &a) && a && !fd_msg_avp_hdr(a, &h) && h->avp_value)
		rc = h->avp_value->u32;
	avp_text(*ans, d_oh, origin, sizeof(origin));
	fd_msg_hdr(*ans, &mh);
	fd_msg_answ_getq(*ans, &q);
	if (q == NULL || fd_msg_hdr(q, &qh))
		qh = mh;
	emit("ANS %s rc=%u origin=%s e2e=0x%08x req_e2e=0x%08x flags=0x%02x", tag, rc, origin,
	     mh->msg_eteid, qh->msg_eteid, mh->msg_flags);
	fd_msg_free(*ans);
	*ans = NULL;
	free(tag);
}

static void on_expire(void *data, DiamId_t sentto, size_t len, struct msg **req)
{
	char *tag = data;
	emit("EXP %s", tag);
	fd_msg_free(*req);
	*req = NULL;
	free(tag);
}

static int send_uar(const char *tag, const char *realm, const char *route_record)
{
	struct msg *m = NULL;
	struct avp *vsai;
	struct timespec ts;
	char *t = strdup(tag);

	CHECK_FCT(fd_msg_new(d_uar, MSGFL_ALLOC_ETEID, &m));
	CHECK_FCT(fd_msg_new_session(m, (os0_t)tag, strlen(tag)));
	CHECK_FCT(fd_msg_avp_new(d_vsai, 0, &vsai));
	CHECK_FCT(add_u32(vsai, d_vid, VENDOR_3GPP));
	CHECK_FCT(add_u32(vsai, d_aai, CX_APP));
	CHECK_FCT(fd_msg_avp_add(m, MSG_BRW_LAST_CHILD, vsai));
	CHECK_FCT(add_u32(m, d_ass, 1)); /* NO_STATE_MAINTAINED */
	CHECK_FCT(fd_msg_add_origin(m, 0));
	CHECK_FCT(add_os(m, d_dr, realm));
	CHECK_FCT(add_os(m, d_un, tag));
	if (route_record)
		CHECK_FCT(add_os(m, d_rr, route_record));
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 20;
	return fd_msg_send_timeout(&m, on_answer, t, on_expire, &ts);
}

static volatile int stopping;

/* One command line: "send TAG REALM COUNT [ROUTE-RECORD]" */
static void run_command(char *line)
{
	char tag[128], realm[256], name[160], rr[256];
	int count, i, n;

	n = sscanf(line, "send %127s %255s %d %255s", tag, realm, &count, rr);
	if (n < 3)
		return;
	for (i = 0; i < count; i++) {
		snprintf(name, sizeof(name), "%s-%d", tag, i);
		if (send_uar(name, realm, n == 4 ? rr : NULL))
			emit("ERR %s send failed", name);
	}
}

/* The FIFO is opened read-write: open() does not block and there is never an EOF; poll()
 * with a timeout lets fd_ext_fini stop the thread without cancelling it. */
static void *read_commands(void *arg)
{
	char buf[4096];
	size_t used = 0;
	int fd = open(fifo_path, O_RDWR);

	if (fd < 0)
		return NULL;
	while (!stopping) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;
		char *nl;

		if (poll(&p, 1, 200) <= 0)
			continue;
		n = read(fd, buf + used, sizeof(buf) - 1 - used);
		if (n <= 0)
			continue;
		used += n;
		buf[used] = '\0';
		while ((nl = strchr(buf, '\n')) != NULL) {
			*nl = '\0';
			run_command(buf);
			used -= (nl + 1 - buf);
			memmove(buf, nl + 1, used + 1);
		}
		if (used >= sizeof(buf) - 1)
			used = 0; /* an overlong line: dropped */
	}
	close(fd);
	return NULL;
}

static int on_request(struct msg **msg, struct avp *avp, struct session *sess, void *opaque,
		      enum disp_action *act)
{
	struct msg_hdr *h;
	char user[256];

	fd_msg_hdr(*msg, &h);
	avp_text(*msg, d_un, user, sizeof(user));
	emit("REQ %s hbh=0x%08x e2e=0x%08x flags=0x%02x", user, h->msg_hbhid, h->msg_eteid,
	     h->msg_flags);
	CHECK_FCT(fd_msg_new_answer_from_req(fd_g_config->cnf_dict, msg, 0));
	CHECK_FCT(add_u32(*msg, d_ass, 1));
	CHECK_FCT(fd_msg_rescode_set(*msg, "DIAMETER_SUCCESS", NULL, NULL, 1));
	CHECK_FCT(fd_msg_send(msg, NULL, NULL));
	*act = DISP_ACT_CONT;
	return 0;
}

/* "dict" mode: every AVP freeDiameter's dictionary knows for vendors 0 and 3GPP, one line
 * each: "AVP VENDOR CODE NAME MASK VAL BASETYPE DERIVED-TYPE" (for the dictionary cross-check) */
static void dump_avps(vendor_id_t vid)
{
	struct dict_object *v, *t;
	struct dict_avp_data d;
	struct dict_type_data td;
	struct fd_list *sentinel, *li;

	if (find(DICT_VENDOR, VENDOR_BY_ID, &vid, &v) || fd_dict_getlistof(AVP_BY_CODE, v, &sentinel))
		return;
	for (li = sentinel->next; li != sentinel; li = li->next) {
		if (fd_dict_getval(li->o, &d))
			continue;
		td.type_name = "-";
		t = NULL;
		if (!fd_dict_search(fd_g_config->cnf_dict, DICT_TYPE, TYPE_OF_AVP, li->o, &t, ENOENT) && t)
			fd_dict_getval(t, &td);
		emit("AVP %u %u %s 0x%02x 0x%02x %d %s", d.avp_vendor, d.avp_code, d.avp_name,
		     d.avp_flag_mask, d.avp_flag_val, (int)d.avp_basetype, td.type_name);
	}
}

static int fdpeer_init(char *conf)
{
	char mode[16], outp[512];
	int n;

	fifo_path[0] = '\0';
	n = conf ? sscanf(conf, "%15s %511s %511s", mode, outp, fifo_path) : 0;
	if (n < 2) {
		fd_log_error("fdpeer: configuration is \"MODE OUT [FIFO]\"");
		return EINVAL;
	}
	out = fopen(outp, "a");
	if (!out)
		return errno;
	if (strcmp(mode, "dict") == 0) {
		dump_avps(0);
		dump_avps(VENDOR_3GPP);
		emit("END");
		return 0;
	}
	CHECK_FCT(dict_setup());
	CHECK_FCT(fd_disp_app_support(d_app, d_vendor, 1, 0));
	if (strcmp(mode, "server") == 0) {
		struct disp_when when = { .app = d_app, .command = d_uar };
		CHECK_FCT(fd_disp_register(on_request, DISP_HOW_CC, &when, NULL, &srv_hdl));
	} else if (strcmp(mode, "client") == 0 && n == 3) {
		CHECK_POSIX(pthread_create(&reader, NULL, read_commands, NULL));
	} else {
		fd_log_error("fdpeer: unknown mode %s", mode);
		return EINVAL;
	}
	return 0;
}

void fd_ext_fini(void)
{
	if (srv_hdl)
		fd_disp_unregister(&srv_hdl, NULL);
	if (reader) {
		stopping = 1;
		pthread_join(reader, NULL);
	}
	if (out)
		fclose(out);
}

EXTENSION_ENTRY("fdpeer", fdpeer_init);
