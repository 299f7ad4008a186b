/*
 * Compile-time check of include/dmapi.h.
 *
 * This file is valid C99 and C++: it must build with
 *   gcc -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude -c
 *   g++ -std=c++20 -Wall -Wextra -Werror -x c++ -Iinclude -c
 * It names every type, constant and macro of the header and takes the
 * address of every function through a pointer of the exact standard
 * type, so a missing or mistyped declaration fails the build.  It has no
 * main(); pdm_dmapi_header_check() also runs a few checks of the macros
 * and returns the number of failures if someone links and calls it.
 */
#include <dmapi.h>

#include <stddef.h>
#include <string.h>

/* C99 has no _Static_assert: a negative array size fails the build. */
#define PDM_CAT2(a, b) a##b
#define PDM_CAT(a, b) PDM_CAT2(a, b)
#define CHECK(cond) typedef char PDM_CAT(pdm_check_, __LINE__)[(cond) ? 1 : -1]

/* ---- scalar types ---- */
CHECK(sizeof(dm_sessid_t) == 8);
CHECK(sizeof(dm_token_t) == 8);
CHECK(sizeof(dm_eventset_t) == 8);
CHECK(sizeof(dm_sequence_t) == 8);
CHECK(sizeof(dm_off_t) == 8);
CHECK(sizeof(dm_size_t) == 8);
CHECK(sizeof(dm_ssize_t) == 8);
CHECK(sizeof(dm_ino_t) == 8);
CHECK(sizeof(dm_igen_t) == 4);
CHECK(sizeof(dm_fsid_t) == 8);
CHECK(sizeof(dm_attrloc_t) == 8);
CHECK(sizeof(dm_boolean_t) == sizeof(unsigned int));
CHECK(sizeof(dm_nodeid_t) == 4);
CHECK(sizeof(dm_dev_t) == 8);
CHECK(sizeof(dm_mode_t) == sizeof(int));
CHECK(sizeof(dm_nlink_t) == sizeof(int));
CHECK((dm_sessid_t)-1 > 0);          /* unsigned */
CHECK((dm_token_t)-1 > 0);           /* unsigned */
CHECK((dm_off_t)-1 < 0);             /* signed */
CHECK((dm_ssize_t)-1 < 0);           /* signed */
CHECK((dm_size_t)-1 > 0);            /* unsigned */

/* ---- constants ---- */
CHECK(DM_TRUE == 1 && DM_FALSE == 0);
CHECK(DM_NO_SESSION == 0);
CHECK(DM_SESSION_INFO_LEN == 256);
CHECK(DM_INVALID_TOKEN == 0);
CHECK(DM_NO_TOKEN == (dm_token_t)0xFFFFFFFFFFFFFFFFull);
CHECK(DM_INVALID_HLEN == 0);
CHECK(DM_GLOBAL_HLEN == 1);
CHECK(DM_MAX_HANDLE_SIZE == 160);
CHECK(DM_ATTR_NAME_SIZE == 8);
CHECK(sizeof(DM_VER_STR_CONTENTS) > 1);
CHECK(DM_EV_WAIT == 0x1);
CHECK(DM_RR_WAIT == 0x1);
CHECK(DM_WRITE_SYNC == 0x1);
CHECK(DM_MOUNT_RDONLY == 0x1);
CHECK(DM_UNMOUNT_FORCE == 0x1);
CHECK(DM_FLAGS_NDELAY == 0x1 && DM_FLAGS_UNWANTED == 0x2);
CHECK(DM_REGION_NOEVENT == 0 && DM_REGION_READ == 1);
CHECK(DM_REGION_WRITE == 2 && DM_REGION_TRUNCATE == 4);
CHECK(DM_AT_MODE == 0x0001 && DM_AT_UID == 0x0002 && DM_AT_GID == 0x0004);
CHECK(DM_AT_ATIME == 0x0008 && DM_AT_MTIME == 0x0010);
CHECK(DM_AT_CTIME == 0x0020 && DM_AT_SIZE == 0x0040);
CHECK(DM_AT_DTIME == 0x0080 && DM_AT_HANDLE == 0x0100);
CHECK(DM_AT_EMASK == 0x0200 && DM_AT_PMANR == 0x0400);
CHECK(DM_AT_PATTR == 0x0800 && DM_AT_STAT == 0x1000);
CHECK(DM_AT_CFLAG == 0x2000);
CHECK(PDM_DMAPI_HAS_EV_NODEID == 1);
CHECK(PDM_DMAPI_NO_NODEID == (dm_nodeid_t)0xFFFFFFFFu);

/* ---- enumerations ---- */
CHECK(DM_EVENT_INVALID == -1);
CHECK(DM_EVENT_CANCEL == 0);
CHECK(DM_EVENT_MOUNT == 1);
CHECK(DM_EVENT_PREUNMOUNT == 2);
CHECK(DM_EVENT_UNMOUNT == 3);
CHECK(DM_EVENT_DEBUT == 4);
CHECK(DM_EVENT_CREATE == 5);
CHECK(DM_EVENT_CLOSE == 6);
CHECK(DM_EVENT_POSTCREATE == 7);
CHECK(DM_EVENT_REMOVE == 8);
CHECK(DM_EVENT_POSTREMOVE == 9);
CHECK(DM_EVENT_RENAME == 10);
CHECK(DM_EVENT_POSTRENAME == 11);
CHECK(DM_EVENT_LINK == 12);
CHECK(DM_EVENT_POSTLINK == 13);
CHECK(DM_EVENT_SYMLINK == 14);
CHECK(DM_EVENT_POSTSYMLINK == 15);
CHECK(DM_EVENT_READ == 16);
CHECK(DM_EVENT_WRITE == 17);
CHECK(DM_EVENT_TRUNCATE == 18);
CHECK(DM_EVENT_ATTRIBUTE == 19);
CHECK(DM_EVENT_DESTROY == 20);
CHECK(DM_EVENT_NOSPACE == 21);
CHECK(DM_EVENT_USER == 22);
CHECK(DM_EVENT_MAX == 23);
CHECK(DM_EVENT_MAX <= 64);           /* fits in dm_eventset_t */

CHECK(DM_CONFIG_INVALID == 0);
CHECK(DM_CONFIG_BULKALL == 1);
CHECK(DM_CONFIG_CREATE_BY_HANDLE == 2);
CHECK(DM_CONFIG_DTIME_OVERLOAD == 3);
CHECK(DM_CONFIG_LEGACY == 4);
CHECK(DM_CONFIG_LOCK_UPGRADE == 5);
CHECK(DM_CONFIG_MAX_ATTR_ON_DESTROY == 6);
CHECK(DM_CONFIG_MAX_ATTRIBUTE_SIZE == 7);
CHECK(DM_CONFIG_MAX_HANDLE_SIZE == 8);
CHECK(DM_CONFIG_MAX_MANAGED_REGIONS == 9);
CHECK(DM_CONFIG_MAX_MESSAGE_DATA == 10);
CHECK(DM_CONFIG_OBJ_REF == 11);
CHECK(DM_CONFIG_PENDING == 12);
CHECK(DM_CONFIG_PERS_ATTRIBUTES == 13);
CHECK(DM_CONFIG_PERS_EVENTS == 14);
CHECK(DM_CONFIG_PERS_INHERIT_ATTRIBS == 15);
CHECK(DM_CONFIG_PERS_MANAGED_REGIONS == 16);
CHECK(DM_CONFIG_PUNCH_HOLE == 17);
CHECK(DM_CONFIG_TOTAL_ATTRIBUTE_SPACE == 18);
CHECK(DM_CONFIG_WILL_RETRY == 19);
CHECK(DM_CONFIG_MAX == 20);

CHECK(DM_EXTENT_INVALID == 0 && DM_EXTENT_RES == 1 && DM_EXTENT_HOLE == 2);
CHECK(DM_MSGTYPE_INVALID == 0 && DM_MSGTYPE_SYNC == 1);
CHECK(DM_MSGTYPE_ASYNC == 2);
CHECK(DM_RESP_INVALID == 0 && DM_RESP_CONTINUE == 1);
CHECK(DM_RESP_ABORT == 2 && DM_RESP_DONTCARE == 3);
CHECK(DM_RIGHT_NULL == 0 && DM_RIGHT_SHARED == 1 && DM_RIGHT_EXCL == 2);
CHECK(sizeof(dm_eventtype_t) == sizeof(int));
CHECK(sizeof(dm_config_t) == sizeof(int));
CHECK(sizeof(dm_extenttype_t) == sizeof(int));
CHECK(sizeof(dm_msgtype_t) == sizeof(int));
CHECK(sizeof(dm_response_t) == sizeof(int));
CHECK(sizeof(dm_right_t) == sizeof(int));

/* ---- structures: every one, with the layout the library relies on ---- */
CHECK(sizeof(dm_vardata_t) == 8);
CHECK(offsetof(dm_vardata_t, vd_offset) == 0);
CHECK(offsetof(dm_vardata_t, vd_length) == 4);

CHECK(sizeof(dm_attrname_t) == DM_ATTR_NAME_SIZE);
CHECK(sizeof(((dm_attrname_t *)0)->an_chars) == DM_ATTR_NAME_SIZE);
CHECK(offsetof(dm_attrlist_t, _link) == 0);
CHECK(offsetof(dm_attrlist_t, al_name) == 4);
CHECK(offsetof(dm_attrlist_t, al_data) == 12);
CHECK(sizeof(dm_attrlist_t) == 20);

CHECK(offsetof(dm_dispinfo_t, _link) == 0);
CHECK(offsetof(dm_dispinfo_t, di_pad1) == 4);
CHECK(offsetof(dm_dispinfo_t, di_fshandle) == 8);
CHECK(offsetof(dm_dispinfo_t, di_eventset) == 16);
CHECK(sizeof(dm_dispinfo_t) == 24);

/* standard leading members of dm_eventmsg_t, then the pdm extension */
CHECK(offsetof(dm_eventmsg_t, _link) == 0);
CHECK(offsetof(dm_eventmsg_t, ev_type) == 4);
CHECK(offsetof(dm_eventmsg_t, ev_token) == 8);
CHECK(offsetof(dm_eventmsg_t, ev_sequence) == 16);
CHECK(offsetof(dm_eventmsg_t, ev_data) == 24);
CHECK(offsetof(dm_eventmsg_t, ev_nodeid) == 32);
CHECK(offsetof(dm_eventmsg_t, ev_pad1) == 36);
CHECK(sizeof(dm_eventmsg_t) == 40);
CHECK(sizeof(dm_eventmsg_t) % 8 == 0);

CHECK(offsetof(dm_cancel_event_t, ce_sequence) == 0);
CHECK(offsetof(dm_cancel_event_t, ce_token) == 8);
CHECK(sizeof(dm_cancel_event_t) == 16);
CHECK(offsetof(dm_data_event_t, de_handle) == 0);
CHECK(offsetof(dm_data_event_t, de_offset) == 8);
CHECK(offsetof(dm_data_event_t, de_length) == 16);
CHECK(sizeof(dm_data_event_t) == 24);
CHECK(offsetof(dm_destroy_event_t, ds_handle) == 0);
CHECK(offsetof(dm_destroy_event_t, ds_attrname) == 8);
CHECK(offsetof(dm_destroy_event_t, ds_attrcopy) == 16);
CHECK(sizeof(dm_destroy_event_t) == 24);
CHECK(offsetof(dm_mount_event_t, me_mode) == 0);
CHECK(offsetof(dm_mount_event_t, me_handle1) == 4);
CHECK(offsetof(dm_mount_event_t, me_handle2) == 12);
CHECK(offsetof(dm_mount_event_t, me_name1) == 20);
CHECK(offsetof(dm_mount_event_t, me_name2) == 28);
CHECK(offsetof(dm_mount_event_t, me_roothandle) == 36);
CHECK(sizeof(dm_mount_event_t) == 44);
CHECK(offsetof(dm_namesp_event_t, ne_mode) == 0);
CHECK(offsetof(dm_namesp_event_t, ne_handle1) == 4);
CHECK(offsetof(dm_namesp_event_t, ne_handle2) == 12);
CHECK(offsetof(dm_namesp_event_t, ne_name1) == 20);
CHECK(offsetof(dm_namesp_event_t, ne_name2) == 28);
CHECK(offsetof(dm_namesp_event_t, ne_retcode) == 36);
CHECK(sizeof(dm_namesp_event_t) == 40);

CHECK(offsetof(dm_extent_t, ex_type) == 0);
CHECK(offsetof(dm_extent_t, ex_pad1) == 4);
CHECK(offsetof(dm_extent_t, ex_offset) == 8);
CHECK(offsetof(dm_extent_t, ex_length) == 16);
CHECK(sizeof(dm_extent_t) == 24);
CHECK(offsetof(dm_region_t, rg_offset) == 0);
CHECK(offsetof(dm_region_t, rg_size) == 8);
CHECK(offsetof(dm_region_t, rg_flags) == 16);
CHECK(offsetof(dm_region_t, rg_pad1) == 20);
CHECK(sizeof(dm_region_t) == 24);

CHECK(sizeof(((dm_fileattr_t *)0)->fa_mode) == sizeof(dm_mode_t));
CHECK(sizeof(((dm_fileattr_t *)0)->fa_uid) == sizeof(uid_t));
CHECK(sizeof(((dm_fileattr_t *)0)->fa_gid) == sizeof(gid_t));
CHECK(sizeof(((dm_fileattr_t *)0)->fa_atime) == sizeof(time_t));
CHECK(sizeof(((dm_fileattr_t *)0)->fa_mtime) == sizeof(time_t));
CHECK(sizeof(((dm_fileattr_t *)0)->fa_ctime) == sizeof(time_t));
CHECK(sizeof(((dm_fileattr_t *)0)->fa_dtime) == sizeof(time_t));
CHECK(sizeof(((dm_fileattr_t *)0)->fa_pad1) == 4);
CHECK(sizeof(((dm_fileattr_t *)0)->fa_size) == sizeof(dm_off_t));
CHECK(sizeof(dm_fileattr_t) > 0);

CHECK(offsetof(dm_inherit_t, ih_name) == 0);
CHECK(sizeof(((dm_inherit_t *)0)->ih_filetype) == sizeof(mode_t));
CHECK(sizeof(dm_inherit_t) > 0);

/* dm_stat_t: XFS member order */
CHECK(offsetof(dm_stat_t, _link) == 0);
CHECK(offsetof(dm_stat_t, _link) < offsetof(dm_stat_t, dt_handle));
CHECK(offsetof(dm_stat_t, dt_handle) < offsetof(dm_stat_t, dt_compname));
CHECK(offsetof(dm_stat_t, dt_compname) < offsetof(dm_stat_t, dt_nevents));
CHECK(offsetof(dm_stat_t, dt_nevents) < offsetof(dm_stat_t, dt_emask));
CHECK(offsetof(dm_stat_t, dt_emask) < offsetof(dm_stat_t, dt_pers));
CHECK(offsetof(dm_stat_t, dt_pers) < offsetof(dm_stat_t, dt_pmanreg));
CHECK(offsetof(dm_stat_t, dt_pmanreg) < offsetof(dm_stat_t, dt_dtime));
CHECK(offsetof(dm_stat_t, dt_dtime) < offsetof(dm_stat_t, dt_change));
CHECK(offsetof(dm_stat_t, dt_change) < offsetof(dm_stat_t, dt_pad1));
CHECK(offsetof(dm_stat_t, dt_pad1) < offsetof(dm_stat_t, dt_dev));
CHECK(offsetof(dm_stat_t, dt_dev) < offsetof(dm_stat_t, dt_ino));
CHECK(offsetof(dm_stat_t, dt_ino) < offsetof(dm_stat_t, dt_mode));
CHECK(offsetof(dm_stat_t, dt_mode) < offsetof(dm_stat_t, dt_nlink));
CHECK(offsetof(dm_stat_t, dt_nlink) < offsetof(dm_stat_t, dt_uid));
CHECK(offsetof(dm_stat_t, dt_uid) < offsetof(dm_stat_t, dt_gid));
CHECK(offsetof(dm_stat_t, dt_gid) < offsetof(dm_stat_t, dt_rdev));
CHECK(offsetof(dm_stat_t, dt_rdev) < offsetof(dm_stat_t, dt_pad2));
CHECK(offsetof(dm_stat_t, dt_pad2) < offsetof(dm_stat_t, dt_size));
CHECK(offsetof(dm_stat_t, dt_size) < offsetof(dm_stat_t, dt_atime));
CHECK(offsetof(dm_stat_t, dt_atime) < offsetof(dm_stat_t, dt_mtime));
CHECK(offsetof(dm_stat_t, dt_mtime) < offsetof(dm_stat_t, dt_ctime));
CHECK(offsetof(dm_stat_t, dt_ctime) < offsetof(dm_stat_t, dt_blksize));
CHECK(offsetof(dm_stat_t, dt_blksize) < offsetof(dm_stat_t, dt_blocks));
CHECK(offsetof(dm_stat_t, dt_blocks) < offsetof(dm_stat_t, dt_pad3));
CHECK(offsetof(dm_stat_t, dt_pad3) < offsetof(dm_stat_t, dt_fstype));
CHECK(offsetof(dm_stat_t, dt_fstype) < offsetof(dm_stat_t, fsys_dep));
CHECK(sizeof(((dm_stat_t *)0)->dt_emask) == sizeof(dm_eventset_t));
CHECK(sizeof(((dm_stat_t *)0)->dt_xfs_igen) == sizeof(dm_igen_t));
CHECK(sizeof(((dm_stat_t *)0)->dt_xfs_xflags) == 4);
CHECK(sizeof(((dm_stat_t *)0)->dt_xfs_extsize) == 4);
CHECK(sizeof(((dm_stat_t *)0)->dt_xfs_extents) == 4);
CHECK(sizeof(((dm_stat_t *)0)->dt_xfs_aextents) == 2);
CHECK(sizeof(((dm_stat_t *)0)->dt_xfs_dmstate) == 2);
CHECK(sizeof(dm_stat_t) % 8 == 0);

CHECK(offsetof(dm_xstat_t, dx_statinfo) == 0);
CHECK(offsetof(dm_xstat_t, dx_attrdata) == sizeof(dm_stat_t));
CHECK(sizeof(dm_xstat_t) > sizeof(dm_stat_t));

CHECK(sizeof(((dm_timestruct_t *)0)->dm_tv_sec) == sizeof(time_t));
CHECK(sizeof(((dm_timestruct_t *)0)->dm_tv_nsec) == sizeof(int));
CHECK(sizeof(dm_timestruct_t) > 0);

/* ---- every function, through a pointer of its standard type ---- */
struct pdm_dmapi_functions {
	int (*init_service)(char **);
	int (*create_session)(dm_sessid_t, const char *, dm_sessid_t *);
	int (*destroy_session)(dm_sessid_t);
	int (*getall_sessions)(unsigned int, dm_sessid_t *, unsigned int *);
	int (*query_session)(dm_sessid_t, size_t, void *, size_t *);
	int (*get_events)(dm_sessid_t, unsigned int, unsigned int, size_t,
		void *, size_t *);
	int (*respond_event)(dm_sessid_t, dm_token_t, dm_response_t, int,
		size_t, void *);
	int (*move_event)(dm_sessid_t, dm_token_t, dm_sessid_t, dm_token_t *);
	int (*pending)(dm_sessid_t, dm_token_t, dm_timestruct_t *);
	int (*find_eventmsg)(dm_sessid_t, dm_token_t, size_t, void *,
		size_t *);
	int (*getall_tokens)(dm_sessid_t, unsigned int, dm_token_t *,
		unsigned int *);
	int (*create_userevent)(dm_sessid_t, size_t, void *, dm_token_t *);
	int (*send_msg)(dm_sessid_t, dm_msgtype_t, size_t, void *);
	int (*set_disp)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_eventset_t *, unsigned int);
	int (*getall_disp)(dm_sessid_t, size_t, void *, size_t *);
	int (*set_eventlist)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_eventset_t *, unsigned int);
	int (*get_eventlist)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_eventset_t *, unsigned int *);
	int (*get_config_events)(void *, size_t, unsigned int,
		dm_eventset_t *, unsigned int *);
	int (*set_return_on_destroy)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_attrname_t *, dm_boolean_t);
	int (*get_mountinfo)(dm_sessid_t, void *, size_t, dm_token_t, size_t,
		void *, size_t *);
	int (*path_to_handle)(const char *, void **, size_t *);
	int (*fd_to_handle)(int, void **, size_t *);
	int (*path_to_fshandle)(const char *, void **, size_t *);
	int (*handle_to_fshandle)(void *, size_t, void **, size_t *);
	int (*handle_cmp)(void *, size_t, void *, size_t);
	void (*handle_free)(void *, size_t);
	unsigned int (*handle_hash)(void *, size_t);
	dm_boolean_t (*handle_is_valid)(void *, size_t);
	int (*handle_to_fsid)(void *, size_t, dm_fsid_t *);
	int (*handle_to_ino)(void *, size_t, dm_ino_t *);
	int (*handle_to_igen)(void *, size_t, dm_igen_t *);
	int (*make_handle)(dm_fsid_t *, dm_ino_t *, dm_igen_t *, void **,
		size_t *);
	int (*make_fshandle)(dm_fsid_t *, void **, size_t *);
	int (*handle_to_path)(void *, size_t, void *, size_t, size_t, char *,
		size_t *);
	int (*set_dmattr)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_attrname_t *, int, size_t, void *);
	int (*get_dmattr)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_attrname_t *, size_t, void *, size_t *);
	int (*remove_dmattr)(dm_sessid_t, void *, size_t, dm_token_t, int,
		dm_attrname_t *);
	int (*getall_dmattr)(dm_sessid_t, void *, size_t, dm_token_t, size_t,
		void *, size_t *);
	int (*get_fileattr)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_stat_t *);
	int (*set_fileattr)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_fileattr_t *);
	int (*get_dirattrs)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_attrloc_t *, size_t, void *, size_t *);
	int (*get_bulkattr)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_attrloc_t *, size_t, void *, size_t *);
	int (*get_bulkall)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_attrname_t *, dm_attrloc_t *, size_t, void *,
		size_t *);
	int (*init_attrloc)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_attrloc_t *);
	int (*set_region)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_region_t *, dm_boolean_t *);
	int (*get_region)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_region_t *, unsigned int *);
	int (*get_allocinfo)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_off_t *, unsigned int, dm_extent_t *, unsigned int *);
	int (*probe_hole)(dm_sessid_t, void *, size_t, dm_token_t, dm_off_t,
		dm_size_t, dm_off_t *, dm_size_t *);
	int (*punch_hole)(dm_sessid_t, void *, size_t, dm_token_t, dm_off_t,
		dm_size_t);
	dm_ssize_t (*read_invis)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_off_t, dm_size_t, void *);
	dm_ssize_t (*write_invis)(dm_sessid_t, void *, size_t, dm_token_t,
		int, dm_off_t, dm_size_t, void *);
	int (*sync_by_handle)(dm_sessid_t, void *, size_t, dm_token_t);
	int (*request_right)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_right_t);
	int (*release_right)(dm_sessid_t, void *, size_t, dm_token_t);
	int (*query_right)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_right_t *);
	int (*upgrade_right)(dm_sessid_t, void *, size_t, dm_token_t);
	int (*downgrade_right)(dm_sessid_t, void *, size_t, dm_token_t);
	int (*obj_ref_hold)(dm_sessid_t, dm_token_t, void *, size_t);
	int (*obj_ref_rele)(dm_sessid_t, dm_token_t, void *, size_t);
	int (*obj_ref_query)(dm_sessid_t, dm_token_t, void *, size_t);
	int (*get_config)(void *, size_t, dm_config_t, dm_size_t *);
	int (*create_by_handle)(dm_sessid_t, void *, size_t, dm_token_t,
		void *, size_t, const char *);
	int (*mkdir_by_handle)(dm_sessid_t, void *, size_t, dm_token_t,
		void *, size_t, const char *);
	int (*symlink_by_handle)(dm_sessid_t, void *, size_t, dm_token_t,
		void *, size_t, const char *, const char *);
	int (*set_inherit)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_attrname_t *, mode_t);
	int (*clear_inherit)(dm_sessid_t, void *, size_t, dm_token_t,
		dm_attrname_t *);
	int (*getall_inherit)(dm_sessid_t, void *, size_t, dm_token_t,
		unsigned int, dm_inherit_t *, unsigned int *);
};

/* 67 XDSM functions, one pointer each. */
CHECK(sizeof(struct pdm_dmapi_functions) == 67 * sizeof(void (*)(void)));

const struct pdm_dmapi_functions pdm_dmapi_function_table = {
	dm_init_service, dm_create_session, dm_destroy_session,
	dm_getall_sessions, dm_query_session,
	dm_get_events, dm_respond_event, dm_move_event, dm_pending,
	dm_find_eventmsg, dm_getall_tokens, dm_create_userevent, dm_send_msg,
	dm_set_disp, dm_getall_disp, dm_set_eventlist, dm_get_eventlist,
	dm_get_config_events, dm_set_return_on_destroy, dm_get_mountinfo,
	dm_path_to_handle, dm_fd_to_handle, dm_path_to_fshandle,
	dm_handle_to_fshandle, dm_handle_cmp, dm_handle_free, dm_handle_hash,
	dm_handle_is_valid, dm_handle_to_fsid, dm_handle_to_ino,
	dm_handle_to_igen, dm_make_handle, dm_make_fshandle,
	dm_handle_to_path,
	dm_set_dmattr, dm_get_dmattr, dm_remove_dmattr, dm_getall_dmattr,
	dm_get_fileattr, dm_set_fileattr, dm_get_dirattrs, dm_get_bulkattr,
	dm_get_bulkall, dm_init_attrloc,
	dm_set_region, dm_get_region, dm_get_allocinfo, dm_probe_hole,
	dm_punch_hole, dm_read_invis, dm_write_invis, dm_sync_by_handle,
	dm_request_right, dm_release_right, dm_query_right, dm_upgrade_right,
	dm_downgrade_right,
	dm_obj_ref_hold, dm_obj_ref_rele, dm_obj_ref_query,
	dm_get_config,
	dm_create_by_handle, dm_mkdir_by_handle, dm_symlink_by_handle,
	dm_set_inherit, dm_clear_inherit, dm_getall_inherit
};

/* ---- the macros, exercised on real values ---- */
int pdm_dmapi_header_check(void);

int pdm_dmapi_header_check(void)
{
	/* A message of two chained event messages, each followed by its
	 * dm_data_event_t and a 4-byte handle, as dm_get_events lays it out. */
	union {
		dm_eventmsg_t align;
		unsigned char raw[2 * 128];
	} buf;
	dm_eventmsg_t *first, *second, *next;
	dm_data_event_t *de;
	const unsigned char *handle;
	dm_eventset_t set;
	dm_sessid_t sid = DM_NO_SESSION;
	dm_token_t tok = DM_NO_TOKEN;
	dm_nodeid_t node = PDM_DMAPI_NO_NODEID;
	void *global = DM_GLOBAL_HANP;
	void *invalid = DM_INVALID_HANP;
	dm_attrname_t name;
	dm_attrlist_t al;
	dm_dispinfo_t di;
	dm_cancel_event_t ce;
	dm_destroy_event_t ds;
	dm_mount_event_t me;
	dm_namesp_event_t ne;
	dm_extent_t ex;
	dm_fileattr_t fa;
	dm_inherit_t ih;
	dm_region_t rg;
	dm_stat_t st;
	dm_xstat_t xst;
	dm_timestruct_t ts;
	dm_extenttype_t et = DM_EXTENT_RES;
	dm_msgtype_t mt = DM_MSGTYPE_SYNC;
	dm_response_t rsp = DM_RESP_CONTINUE;
	dm_right_t right = DM_RIGHT_SHARED;
	dm_config_t cfg = DM_CONFIG_MAX_MESSAGE_DATA;
	dm_eventtype_t ev = DM_EVENT_USER;
	const char *ver = DM_VER_STR_CONTENTS;
	int failures = 0;
	unsigned int i;

	memset(&buf, 0, sizeof buf);
	first = &buf.align;
	first->_link = 128;
	first->ev_type = DM_EVENT_READ;
	first->ev_token = 42;
	first->ev_sequence = 7;
	first->ev_nodeid = 3;
	first->ev_data.vd_offset = (int32_t)sizeof(dm_eventmsg_t);
	first->ev_data.vd_length = (uint32_t)(sizeof(dm_data_event_t) + 4);
	de = DM_GET_VALUE(first, ev_data, dm_data_event_t *);
	de->de_handle.vd_offset = (int32_t)sizeof(dm_data_event_t);
	de->de_handle.vd_length = 4;
	de->de_offset = 4096;
	de->de_length = 512;
	memcpy((unsigned char *)de + sizeof(dm_data_event_t), "hndl", 4);
	second = (dm_eventmsg_t *)(void *)(buf.raw + 128);
	second->_link = 0;
	second->ev_type = DM_EVENT_USER;
	second->ev_token = DM_INVALID_TOKEN;

	if (DM_GET_LEN(first, ev_data) != sizeof(dm_data_event_t) + 4)
		failures++;
	handle = DM_GET_VALUE(de, de_handle, const unsigned char *);
	if (DM_GET_LEN(de, de_handle) != 4 || memcmp(handle, "hndl", 4) != 0)
		failures++;
	next = DM_STEP_TO_NEXT(first, dm_eventmsg_t *);
	if (next != second || next->ev_type != DM_EVENT_USER)
		failures++;
	if (DM_STEP_TO_NEXT(second, dm_eventmsg_t *) != NULL)
		failures++;
	if (first->ev_nodeid != 3 || first->ev_sequence != 7 ||
	    first->ev_token != 42)
		failures++;

	DMEV_ZERO(set);
	if (set != 0)
		failures++;
	DMEV_SET(DM_EVENT_CANCEL, set);
	DMEV_SET(DM_EVENT_READ, set);
	DMEV_SET(DM_EVENT_USER, set);
	if (!DMEV_ISSET(DM_EVENT_READ, set) || !DMEV_ISSET(DM_EVENT_USER, set) ||
	    !DMEV_ISSET(DM_EVENT_CANCEL, set) || DMEV_ISSET(DM_EVENT_WRITE, set))
		failures++;
	DMEV_CLR(DM_EVENT_READ, set);
	if (DMEV_ISSET(DM_EVENT_READ, set))
		failures++;
	for (i = 0; i < 64; i++) {          /* all 64 bits are usable */
		DMEV_ZERO(set);
		DMEV_SET(i, set);
		if (set != ((dm_eventset_t)1 << i) || DMEV_ISSET(i, set) != 1)
			failures++;
	}

	memset(&name, 0, sizeof name);
	memcpy(name.an_chars, "PDMSTATE", DM_ATTR_NAME_SIZE);
	memset(&al, 0, sizeof al);
	al.al_name = name;
	al.al_data.vd_length = 0;
	memset(&di, 0, sizeof di);
	di.di_eventset = set;
	memset(&ce, 0, sizeof ce);
	ce.ce_token = tok;
	memset(&ds, 0, sizeof ds);
	ds.ds_attrname = name;
	memset(&me, 0, sizeof me);
	me.me_mode = DM_MOUNT_RDONLY;
	memset(&ne, 0, sizeof ne);
	ne.ne_mode = DM_UNMOUNT_FORCE;
	memset(&ex, 0, sizeof ex);
	ex.ex_type = et;
	ex.ex_type = DM_EXTENT_HOLE;
	memset(&fa, 0, sizeof fa);
	fa.fa_size = 0;
	memset(&ih, 0, sizeof ih);
	ih.ih_name = name;
	memset(&rg, 0, sizeof rg);
	rg.rg_flags = DM_REGION_READ | DM_REGION_WRITE | DM_REGION_TRUNCATE;
	memset(&st, 0, sizeof st);
	st.dt_emask = set;
	st.dt_xfs_dmstate = 0;
	memset(&xst, 0, sizeof xst);
	xst.dx_statinfo = st;
	memset(&ts, 0, sizeof ts);
	ts.dm_tv_nsec = 0;

	if (sid != 0 || tok == DM_INVALID_TOKEN || node != 0xFFFFFFFFu)
		failures++;
	if (global == invalid || ver[0] == '\0')
		failures++;
	if (mt != DM_MSGTYPE_SYNC || rsp != DM_RESP_CONTINUE ||
	    right != DM_RIGHT_SHARED || cfg != DM_CONFIG_MAX_MESSAGE_DATA ||
	    ev != DM_EVENT_USER || ex.ex_type != DM_EXTENT_HOLE)
		failures++;
	if (al.al_name.an_chars[0] != 'P' || di.di_eventset != set ||
	    ce.ce_token != DM_NO_TOKEN || ds.ds_attrname.an_chars[7] != 'E' ||
	    me.me_mode != 1 || ne.ne_mode != 1 || fa.fa_size != 0 ||
	    ih.ih_name.an_chars[1] != 'D' || rg.rg_flags != 7 ||
	    xst.dx_statinfo.dt_emask != set || ts.dm_tv_nsec != 0)
		failures++;
	if (pdm_dmapi_function_table.get_events != dm_get_events)
		failures++;
	return failures;
}
