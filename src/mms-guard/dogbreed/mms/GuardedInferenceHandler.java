package dogbreed.mms;

import com.amazonaws.ml.mms.archive.ModelException;
import com.amazonaws.ml.mms.http.BadRequestException;
import com.amazonaws.ml.mms.http.InferenceRequestHandler;
import com.amazonaws.ml.mms.http.ResourceNotFoundException;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.amazonaws.ml.mms.wlm.ModelManager;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.handler.codec.http.multipart.HttpPostRequestDecoder;
import java.util.Map;
import java.util.Set;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;

/**
 * MMS's inference API, with every prediction queued within a bound on request bytes ({@link
 * QueuedRequests}) and, in multi-model mode, sent to the shared workers ({@link SharedModels}).
 *
 * <p>The prediction paths and how they name a model are MMS's: {@code POST /invocations} (the
 * {@code model_name} parameter, else the one model registered at start-up), {@code
 * /models/NAME/invoke}, {@code /predictions/NAME} and {@code /NAME/predict}. With shared workers,
 * the names are those the platform loaded; {@code /invocations} without a name is 400, and {@code
 * /predictions/NAME} and {@code /NAME/predict} are 404, as they would name the shared model itself.
 * Form and multipart bodies, which MMS would unpack into parameters, are 415: the handler takes
 * image bytes or JSON. {@code /ping}, the API description and {@code OPTIONS} are MMS's own.
 */
public class GuardedInferenceHandler extends InferenceRequestHandler {

    public GuardedInferenceHandler(Map<String, ModelServerEndpoint> endpoints) {
        super(endpoints);
    }

    @Override
    protected void handleRequest(
            ChannelHandlerContext ctx,
            FullHttpRequest req,
            QueryStringDecoder decoder,
            String[] segments)
            throws ModelException {
        String path = predictionPath(segments);
        if (path == null || HttpMethod.OPTIONS.equals(req.method())) {
            super.handleRequest(ctx, req, decoder, segments);
            return;
        }
        CharSequence type = HttpUtil.getMimeType(req);
        if (HttpPostRequestDecoder.isMultipart(req)
                || HttpHeaderValues.APPLICATION_X_WWW_FORM_URLENCODED.contentEqualsIgnoreCase(type)) {
            NettyUtils.sendError(
                    ctx,
                    HttpResponseStatus.UNSUPPORTED_MEDIA_TYPE,
                    new BadRequestException("send the image bytes or JSON, not a form"));
            return;
        }
        // The model: a parameter of /invocations, the first segment of /NAME/predict, else the second.
        String name =
                "invocations".equals(path)
                        ? NettyUtils.getParameter(decoder, "model_name", null)
                        : "predict".equals(path) ? segments[1] : segments[2];
        if (SharedModels.enabled()) {
            if ("predictions".equals(path) || "predict".equals(path)) {
                throw new ResourceNotFoundException();
            }
            if (name == null || name.isEmpty()) {
                throw new BadRequestException("Parameter model_name is required.");
            }
            SharedModels.invoke(ctx, req, decoder, name);
            return;
        }
        if ((name == null || name.isEmpty()) && "invocations".equals(path)) {
            Set<String> startup = ModelManager.getInstance().getStartupModels();
            name = startup.size() == 1 ? startup.iterator().next() : null;
        }
        if (name == null || name.isEmpty()) {
            throw new BadRequestException("Parameter model_name is required.");
        }
        QueuedRequests.submit(
                ctx, name, QueuedRequests.input(ctx, req, decoder), req.content().readableBytes());
    }

    /** Which of MMS's prediction paths ``segments`` is ("invocations", "invoke", "predictions", "predict"), or null. */
    private static String predictionPath(String[] segments) {
        if (segments.length == 2 && "invocations".equals(segments[1])) {
            return "invocations";
        }
        if (segments.length == 4 && "models".equals(segments[1]) && "invoke".equals(segments[3])) {
            return "invoke";
        }
        if (segments.length >= 3 && "predictions".equals(segments[1])) {
            return "predictions";
        }
        if (segments.length == 3 && "predict".equals(segments[2])) {
            return "predict";
        }
        return null;
    }
}
