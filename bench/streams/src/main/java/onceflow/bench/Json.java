package onceflow.bench;

/**
 * The few JSON operations of the windowed contenders: the text of a
 * top-level number or string field of a flat object (the harness writes
 * {"auction":1,"bidder":2,"price":3,"ts":4}), and a result record.
 */
final class Json {
    private Json() {}

    /** The raw text of field's value (unquoted for a string). */
    static String field(String json, String field) {
        String needle = "\"" + field + "\":";
        int i = json.indexOf(needle);
        if (i < 0) {
            throw new IllegalArgumentException("no field " + field + " in " + json);
        }
        i += needle.length();
        while (i < json.length() && json.charAt(i) == ' ') {
            i++;
        }
        if (i < json.length() && json.charAt(i) == '"') {
            int end = json.indexOf('"', i + 1);
            return json.substring(i + 1, end);
        }
        int end = i;
        while (end < json.length() && json.charAt(end) != ',' && json.charAt(end) != '}' && json.charAt(end) != ' ') {
            end++;
        }
        return json.substring(i, end);
    }

    /** {"key":"k","start":s,"end":e,"value":n}; keys are decimal ids. */
    static String result(String key, long start, long end, long n) {
        return "{\"key\":\"" + key + "\",\"start\":" + start + ",\"end\":" + end + ",\"value\":" + n + "}";
    }
}
